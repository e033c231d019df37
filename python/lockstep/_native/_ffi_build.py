"""cffi build module: generates the C source of `lockstep._native._lockstep_ffi` from csrc/cdef/*.cdef.

CMake runs `python _ffi_build.py OUT.c` at build time (scikit-build-core); the C core in csrc/
is compiled and linked by CMake, not by cffi.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cffi import FFI

CSRC = Path(__file__).resolve().parents[3] / "csrc"

ffibuilder = FFI()
ffibuilder.cdef("\n".join(p.read_text() for p in sorted((CSRC / "cdef").glob("*.cdef"))))
# A no-op entry point: the measured floor of one Python -> C call through cffi.
ffibuilder.cdef("void ls_noop(void);")
ffibuilder.set_source(
    "lockstep._native._lockstep_ffi",
    '#include "lockstep.h"\n#include "bench_floor.h"\nstatic void ls_noop(void) {}\n',
    include_dirs=[str(CSRC), str(CSRC / "bench")],
)

if __name__ == "__main__":
    ffibuilder.emit_c_code(sys.argv[1])
