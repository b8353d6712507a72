"""The few path and file calls of the runtime's hot path, without importing os.

`import os` costs about 5 million instructions (a quarter of the interpreter's own start-up: it
builds the collections ABCs), and managers call `capsa state`, `start`, `kill` and `delete`
several times per container. Those calls need only a handful of os's functions, which are thin
wrappers over the builtin posix module; the modules on their path (cli, state, container,
procfs, and the cgroups package, which `delete`, `kill --all`, `pause` and `resume` load) use this
module instead. The create and exec paths import os as usual.

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


def dirname(path: str) -> str:
    """posixpath.dirname: everything before the last slash, trailing slashes dropped (not a root's)."""
    head = path[:path.rfind("/") + 1]
    if head and head != "/" * len(head):
        head = head.rstrip("/")
    return head


def commonpath(paths: list[str]) -> str:
    """posixpath.commonpath: the longest common sub-path (whole components, "." and empty ones dropped)."""
    if not paths:
        raise ValueError("commonpath() arg is an empty sequence")
    absolute = {p.startswith("/") for p in paths}
    if len(absolute) != 1:
        raise ValueError("Can't mix absolute and relative paths")
    split = [[c for c in p.split("/") if c and c != "."] for p in paths]
    # As posixpath: what the least and the greatest lists share, all lists share.
    first, last = min(split), max(split)
    common = first
    for index, component in enumerate(first):
        if component != last[index]:
            common = first[:index]
            break
    prefix = "/" if absolute.pop() else ""
    return prefix + "/".join(common)


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


def relpath(path: str, start: str) -> str:
    """posixpath.relpath: `path` as seen from `start` (both made absolute first)."""
    if not path:
        raise ValueError("no path specified")
    start_parts = [p for p in abspath(start).split("/") if p]
    path_parts = [p for p in abspath(path).split("/") if p]
    shared = 0
    for a, b in zip(start_parts, path_parts, strict=False):  # the shorter one bounds the shared part
        if a != b:
            break
        shared += 1
    parts = [".."] * (len(start_parts) - shared) + path_parts[shared:]
    return "/".join(parts) if parts else "."


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
