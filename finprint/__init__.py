"""finprint: recognise individual fish on edge hardware."""

from pathlib import Path as _Path

__version__ = "0.1.0"

# Run from a source checkout that is not installed (a GPU box running scripts/gpu-check, say): distill/,
# export/, runtime/ and calib/ sit beside this folder instead of inside it, so finprint.<name> looks there too.
_here = _Path(__file__).resolve().parent
if (_here.parent / "pyproject.toml").is_file() and not (_here / "distill").is_dir():
    __path__.append(str(_here.parent))
