"""Write tests/export/trt_10_3_names.txt: every Python-visible name in TensorRT 10.3's bindings (JetPack 6.1/6.2).

The 10.3 bindings wheel cannot import without TensorRT's libraries, but pybind11 registers every class,
method, property and enum value by a C string kept in the binary. Regenerate (needs pip and the network):

    python -m pip download --no-deps tensorrt-cu12-bindings==10.3.0 -d /tmp/trt103
    python tests/export/make_trt_names.py /tmp/trt103/tensorrt_cu12_bindings-10.3.0-*.whl

The linker merges a short string into the tail of a longer one ("Logger" lives inside "ILogger", "INPUT"
inside "CONDITIONAL_INPUT"), so the list keeps the trailing identifier of every NUL-terminated string, and
a name counts as present when it is a suffix of a listed entry (tests/export/test_trt_conformance.py).
"""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

OUT = Path(__file__).with_name("trt_10_3_names.txt")


def names_in(binary: bytes) -> list[str]:
    tails = set()
    for raw in re.findall(rb"[\x20-\x7e]+(?=\x00)", binary):
        match = re.search(r"[A-Za-z_][A-Za-z0-9_]*$", raw.decode("ascii"))
        if match is None:
            continue
        name = match.group(0)
        if name.startswith("_Z") or len(name) > 64:  # C++ mangled symbols are not Python names
            continue
        tails.add(name)
    return sorted(tails)


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as zf:
        so = next(n for n in zf.namelist() if n.endswith(".so") and "tensorrt" in n)
        names = names_in(zf.read(so))
    header = f"# TensorRT 10.3 Python names from {Path(wheel).name}:{so}; made by tests/export/make_trt_names.py\n"
    OUT.write_text(header + "\n".join(names) + "\n")
    print(f"{OUT}: {len(names)} names")


if __name__ == "__main__":
    main(sys.argv[1])
