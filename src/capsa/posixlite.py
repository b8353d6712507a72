"""The few path and file calls of the runtime's hot path, without importing os.

`import os` costs about 5 million instructions (a quarter of the interpreter's own start-up: it
builds the collections ABCs), and managers call `capsa state`, `start`, `kill` and `delete`
several times per container. Those calls need only a handful of os's functions, which are thin
wrappers over the builtin posix module; the modules on their path (cli, state, container,
procfs, and the cgroups package, which `delete`, `kill --all`, `pause` and `resume` load) use this
module instead. What only create needs is not here (each function costs every call ~20-40k
instructions to load): the cgroups package keeps its create-time path arithmetic in
capsa.cgroups.common. The create and exec paths import os as usual.

Paths are str, as everywhere in capsa; the semantics are posixpath's.
"""

from __future__ import annotations

import posix

_S_IFMT = 0o170000
_S_IFDIR = 0o040000
_S_IFREG = 0o100000


def join(first: str, *rest: str) -> str:
    """posixpath.join: an absolute component starts over."""
    path = first
    for part in rest:
        if part.startswith("/"):
            path = part
        elif not path or path.endswith("/"):
            path += part
        else:
            path += "/" + part
    return path


def basename(path: str) -> str:
    return path.rpartition("/")[2]


def normpath(path: str) -> str:
    """posixpath.normpath: no empty, "." or ".." components (lexically; symlinks are not read)."""
    if not path:
        return "."
    # POSIX keeps exactly two leading slashes; three or more are one.
    initial = 2 if path.startswith("//") and not path.startswith("///") else 1 if path.startswith("/") else 0
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part != ".." or (not initial and not parts) or (parts and parts[-1] == ".."):
            parts.append(part)
        elif parts:
            parts.pop()
    return "/" * initial + "/".join(parts) or "."


def abspath(path: str) -> str:
    if not path.startswith("/"):
        path = join(posix.getcwd(), path)
    return normpath(path)


def _mode(path: str) -> int:
    try:
        return posix.stat(path).st_mode
    except (OSError, ValueError):
        return 0


def exists(path: str) -> bool:
    """os.path.exists: stat succeeds (a dangling symlink does not exist)."""
    try:
        posix.stat(path)
    except (OSError, ValueError):
        return False
    return True


def isdir(path: str) -> bool:
    return _mode(path) & _S_IFMT == _S_IFDIR


def isfile(path: str) -> bool:
    return _mode(path) & _S_IFMT == _S_IFREG


def makedirs(path: str, mode: int = 0o777, exist_ok: bool = False) -> None:
    """os.makedirs: the missing parents first, then the directory itself."""
    parent = path.rstrip("/").rpartition("/")[0]
    if parent and not isdir(parent):
        makedirs(parent, mode, exist_ok=True)
    try:
        posix.mkdir(path, mode)
    except FileExistsError:
        if not exist_ok or not isdir(path):
            raise


def walk_dirs(top: str):
    """The directories os.walk(top) visits, top first: a directory that cannot be listed (gone
    meanwhile) is skipped with what is under it, and symlinks are not followed."""
    try:
        with posix.scandir(top) as entries:
            subdirs = [entry.path for entry in entries if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return
    yield top
    for subdir in subdirs:
        yield from walk_dirs(subdir)


def getenv(name: str, default: str | None = None) -> str | None:
    """os.environ.get: posix.environ holds bytes, decoded as os decodes them."""
    value = posix.environ.get(name.encode())
    return default if value is None else value.decode("utf-8", "surrogateescape")
