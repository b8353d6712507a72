"""Foreign calls without the ctypes package: the glue every module of capsa.linux calls through.

Why _ctypes and not ctypes: `import ctypes` costs 10.6M instructions (~2.5 ms, callgrind) of every
create, run and exec; ctypes/__init__.py builds dozens of classes and caches and imports os
(4.4M by itself). The C module `_ctypes` costs 0.8M and has everything used here: dlopen, a
function-pointer type, simple types, arrays (`Type * n`), byref and errno. This is the only
module of capsa that imports _ctypes; capsa.seccomp makes libseccomp's functions with the
`Library`, `function` and `ctype` it exports through capsa.linux.
"""

from __future__ import annotations

import _ctypes
import posix
from _ctypes import _SimpleCData, addressof, byref, get_errno  # noqa: F401 - addressof, byref: for the package

from capsa.linux import arch


# The C types, defined as ctypes defines them (LP64). Each costs ~0.14M instructions to create (a
# class and its byte-swapped twin), so only c_long and c_uint are made at import, the others on
# first use, by ctype(). The kernel's argument structures are packed with _struct rather than
# made Structure classes.
class c_long(_SimpleCData):
    _type_ = "l"


class c_uint(_SimpleCData):
    _type_ = "I"


_MADE: dict[str, type] = {"c_long": c_long, "c_uint": c_uint, "c_uint32": c_uint}
_TYPE_CODES = {"c_int": "i", "c_ushort": "H", "c_ulong": "L", "c_void_p": "P", "c_char": "c", "c_char_p": "z"}
_ALIASES = {"c_uint64": "c_ulong", "c_size_t": "c_ulong"}


def ctype(name: str) -> type:
    """The C type `name` ("c_int", "c_char_p", "c_uint32", ...), made on first use."""
    made = _MADE.get(name)
    if made is None:
        real = _ALIASES.get(name, name)
        made = _MADE.get(real) or type(real, (_SimpleCData,), {"_type_": _TYPE_CODES[real]})
        _MADE[real] = _MADE[name] = made
    return made


class _Function(_ctypes.CFuncPtr):
    """A C function (cdecl) of which ctypes keeps errno, the GIL released during the call; without
    a restype it returns a C int."""

    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO


class _PythonFunction(_ctypes.CFuncPtr):
    """The same with the GIL held (ctypes' PyDLL): for the interpreter's own API and for clone3."""

    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_PYTHONAPI | _ctypes.FUNCFLAG_USE_ERRNO


class Library:
    """A shared library (dlopen; OSError if it cannot be loaded): what CFuncPtr((name, library))
    reads is its handle."""

    def __init__(self, name: str | None):
        self._handle = _ctypes.dlopen(name, _ctypes.RTLD_LOCAL)


_process = Library(None)  # the interpreter's own symbols: libc and libpython


def function(name: str, restype: type | str | None = "int", library: Library = _process,
             hold_gil: bool = False) -> _Function:
    """The C function `name` of `library` (this process's libc by default), errno kept; restype
    None is void."""
    func = (_PythonFunction if hold_gil else _Function)((name, library))
    if restype != "int":
        func.restype = restype
    return func


def string_buffer(init: bytes | int, size: int | None = None) -> _ctypes.Array:
    """ctypes.create_string_buffer: a zeroed char array of `init` bytes, or one holding the bytes
    `init` (NULs included) in `size` bytes, by default one more for a terminating NUL."""
    c_char = ctype("c_char")
    if isinstance(init, int):
        return (c_char * init)()
    buffer = (c_char * (len(init) + 1 if size is None else size))()
    buffer[:len(init)] = init
    return buffer


class _Libc:
    """libc's functions by attribute, made on first use (as ctypes.CDLL's)."""

    def __getattr__(self, name: str) -> _Function:
        func = function(name)
        setattr(self, name, func)
        return func


libc = _Libc()
_syscall = function("syscall", c_long)


def syscall(name: str, *args: object) -> int:
    """syscall(2) of `name`, numbered for this machine by capsa.linux.arch; the raw result, errno
    kept for check()."""
    return _syscall(arch.number(name), *args)


def check(result: int, what: str, path: str | None = None) -> int:
    """`result` of a call that sets errno on failure, or OSError(errno, "what: strerror", path)."""
    if result < 0:
        err = get_errno()
        raise OSError(err, f"{what}: {posix.strerror(err)}", path)
    return result


def fsencode(path: str | bytes | None) -> bytes | None:
    """os.fsencode of a str path (bytes and None pass through)."""
    if path is None or isinstance(path, bytes):
        return path
    return path.encode("utf-8", "surrogateescape")
