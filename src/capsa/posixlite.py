"""The few path and file calls of the runtime, without importing os.

`import os` costs about 4.4 million instructions (a quarter of the interpreter's own start-up: it
builds the collections ABCs), and managers call the runtime several times per container. Its
calls need only a handful of os's functions, which are thin wrappers over the builtin posix
module; the modules on the paths of create, run, exec, state, start, kill and delete (the cgroups
package included) use `posix` and this module instead. Every call loads all of this module (each
function costs ~20-40k instructions to load): path helpers that only the cgroup drivers need
live with them (capsa.cgroups.common: exists, walk_dirs, commonpath, relpath).

Paths are str, as everywhere in capsa; the semantics are posixpath's.
"""

from __future__ import annotations

import posix

_S_IFMT = 0o170000
_S_IFDIR = 0o040000
_S_IFREG = 0o100000
_S_IFLNK = 0o120000


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


def split(path: str) -> tuple[str, str]:
    """posixpath.split: (head, tail), the head without trailing slashes unless it is all slashes."""
    head, _, tail = path.rpartition("/")
    if "/" in path:
        head += "/"
    if head and head != "/" * len(head):
        head = head.rstrip("/")
    return head, tail


def dirname(path: str) -> str:
    return split(path)[0]


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


def realpath(path: str) -> str:
    """posixpath.realpath (not strict): symlinks resolved as far as they exist, loops left as they are."""
    resolved, _ = _join_real("", path, {})
    return abspath(resolved)


def _join_real(path: str, rest: str, seen: dict[str, str | None]) -> tuple[str, bool]:
    """posixpath._joinrealpath: `rest` resolved onto the already resolved `path`."""
    if rest.startswith("/"):
        rest = rest[1:]
        path = "/"
    while rest:
        name, _, rest = rest.partition("/")
        if not name or name == ".":
            continue
        if name == "..":
            if path:
                path, name = split(path)
                if name == "..":
                    path = join(path, "..", "..")
            else:
                path = ".."
            continue
        candidate = join(path, name)
        try:
            is_link = posix.lstat(candidate).st_mode & _S_IFMT == _S_IFLNK
        except OSError:
            is_link = False
        if not is_link:
            path = candidate
            continue
        if candidate in seen:
            path = seen[candidate]  # type: ignore[assignment]
            if path is not None:
                continue
            return join(candidate, rest), False  # a symlink loop
        seen[candidate] = None
        path, ok = _join_real(path, posix.readlink(candidate), seen)
        if not ok:
            return join(path, rest), False
        seen[candidate] = path
    return path, True


def _mode(path: str) -> int:
    try:
        return posix.stat(path).st_mode
    except (OSError, ValueError):
        return 0


def isdir(path: str) -> bool:
    return _mode(path) & _S_IFMT == _S_IFDIR


def isfile(path: str) -> bool:
    return _mode(path) & _S_IFMT == _S_IFREG


def read_bytes(path: str) -> bytes:
    """A whole file, by open, read and close alone: Python's open() adds an fstat, a TCGETS ioctl,
    two lseeks and a second fstat (and a buffer object) to each file it reads. For the small files
    a call reads several of: records, cgroup and /proc files."""
    fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
    try:
        chunks = []
        while chunk := posix.read(fd, 65536):
            chunks.append(chunk)
    finally:
        posix.close(fd)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


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


def getenv(name: str, default: str | None = None) -> str | None:
    """os.environ.get: posix.environ holds bytes, decoded as os decodes them."""
    value = posix.environ.get(name.encode())
    return default if value is None else value.decode("utf-8", "surrogateescape")
