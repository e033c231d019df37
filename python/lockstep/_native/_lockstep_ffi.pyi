# The cffi-generated module (built from csrc/cdef/*.cdef by _ffi_build.py): its members are
# the C declarations, typed by cffi at run time.
from typing import Any

ffi: Any
lib: Any
