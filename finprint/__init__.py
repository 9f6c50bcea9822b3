"""finprint: recognise individual fish on edge hardware."""

from pathlib import Path as _Path

__version__ = "0.1.0"

# Run from a source checkout that is not installed (a GPU box running scripts/gpu-check, say): distill/,
# export/, runtime/ and calib/ sit beside this folder instead of inside it, so finprint.<name> looks there too.
_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and not (_Path(__file__).resolve().parent / "distill").is_dir():
    __path__.append(str(_checkout))
