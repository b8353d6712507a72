"""Container state on disk: one directory per container under the state root.

Layout of ``<root>/<id>/``:
  state.json   the container's record, replaced atomically (temp file, rename)
  config.json  the validated config.json of create (read by exec and update only)
  start.sock   the socket `start` connects to; the waiting init accepts on it (create/start split)

Writers hold an exclusive flock on the container directory itself, so two calls on one id are
serialised; readers never need the lock because a rename makes each write all-or-nothing. Creating a
container is ``mkdir``, so of two concurrent creates of one id exactly one wins.
"""

from __future__ import annotations

import posix
import time

from capsa import OCI_VERSION, jsonfast, posixlite
from capsa.errors import (
    AmbiguousIdError,
    CapsaError,
    CorruptStateError,
    ExistsError,
    InvalidIdError,
    NotFoundError,
    StateError,
)

TYPE_CHECKING = False  # typing costs ~6 ms to import; annotations are never evaluated
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

STATE_FILE = "state.json"
CONFIG_FILE = "config.json"  # the validated config.json, kept apart: most calls never read it
START_SOCKET = "start.sock"
# Compiled seccomp programs (capsa.seccomp), beside the containers: "@" is never in an id.
SECCOMP_CACHE = "@seccomp-bpf"
MAX_ID_LENGTH = 1024

# Lifecycle statuses, as the OCI runtime-spec names them.
CREATING = "creating"
CREATED = "created"
RUNNING = "running"
PAUSED = "paused"
STOPPED = "stopped"

# What each operation requires of the current status (the lifecycle state machine).
_ALLOWED = {
    "start": (CREATED,),
    "kill": (CREATED, RUNNING, PAUSED),
    "pause": (RUNNING, CREATED),
    "resume": (PAUSED,),
    "exec": (CREATED, RUNNING),
    "delete": (STOPPED,),
}

_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")


def check_transition(operation: str, container_id: str, status: str) -> None:
    """Raise StateError unless `operation` is allowed for a container in `status`."""
    if status in _ALLOWED[operation]:
        return
    if operation == "start":
        detail = {
            RUNNING: "cannot start an already running container",
            PAUSED: "cannot start a paused container",
            STOPPED: "cannot start a container that has stopped",
            CREATING: "cannot start a container that is still being created",
        }[status]
        raise StateError(f"container {container_id}: {detail}")
    if operation == "delete":
        raise StateError(f"cannot delete container {container_id} that is not stopped: {status}")
    if operation == "kill":
        raise StateError(f"container {container_id} is not running (status: {status})")
    raise StateError(f"cannot {operation} container {container_id}: its status is {status}")


def validate_id(container_id: str) -> None:
    """Ids match ^[\\w+\\-\\.]+$ (ASCII), as runc's; '.' and '..' would escape the state root."""
    if not container_id:
        raise InvalidIdError("invalid container id: the id is empty")
    if len(container_id) > MAX_ID_LENGTH:
        raise InvalidIdError(f"invalid container id: longer than {MAX_ID_LENGTH} characters")
    if container_id in (".", "..") or not _ID_CHARS.issuperset(container_id):
        raise InvalidIdError(
            f"invalid container id {container_id!r}: use letters, digits and _ + - . only"
        )


def now_rfc3339() -> str:
    """The current UTC time as Go's RFC3339Nano formats it (runc's `created`)."""
    ns = time.time_ns()
    seconds, frac = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    fraction = f"{frac:09d}".rstrip("0")
    return f"{text}.{fraction}Z" if fraction else f"{text}Z"


def hook_state(record: dict[str, Any], status: str) -> dict[str, Any]:
    """The state a container's hooks receive on stdin (the runtime-spec's fields only)."""
    result = {"ociVersion": record.get("ociVersion", OCI_VERSION), "id": record["id"], "status": status,
              "pid": record.get("pid") or 0, "bundle": record["bundle"]}
    if record.get("annotations"):
        result["annotations"] = record["annotations"]
    return result


def write_atomic(path: str, data: str | bytes, mode: int = 0o600, exchange: Any = None) -> None:
    """Write a file so readers see the old content or the new, never a part: temp file, rename.

    `exchange` (capsa.linux.exchange, from a caller that has the package loaded): the temp file
    and the old one swap names in one step, and the old one is unlinked, instead of a rename
    over it. The same for readers; on ext4 (this VM's /run) a file renamed over another is
    written out at once (auto_da_alloc), and unlinking it later frees and discards its blocks:
    ~0.1 ms at the container's delete, against ~3 us for a file never renamed over.

    No fsync: the state describes processes of this boot only (after a crash there is nothing
    left to describe), the rename alone makes the write atomic for readers, and /run is not
    always a tmpfs (it is ext4 on this VM, where one fsync costs 1-3 ms per call). runc and crun
    do not fsync their state either. A state file a crash left empty reads as corrupt, and
    `delete --force` removes it."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = f"{path}.tmp{posix.getpid()}"
    fd = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_CLOEXEC, mode)
    try:
        posix.write(fd, raw)
    finally:
        posix.close(fd)
    try:
        if exchange is not None and exchange(tmp, path):
            unlink_quietly(tmp)  # the old content, under the temporary name now
        else:
            posix.rename(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise


def unlink_quietly(path: str) -> None:
    try:
        posix.unlink(path)
    except FileNotFoundError:
        pass


class ContainerLock:
    """An exclusive flock on a container's state directory, held for one operation."""

    def __init__(self, directory: str):
        self.directory = directory
        self.fd = -1

    def __enter__(self) -> ContainerLock:
        try:
            self.fd = posix.open(self.directory, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFoundError(posixlite.basename(self.directory)) from None
        import fcntl  # only writers lock: `state` and `list` never load it

        fcntl.flock(self.fd, fcntl.LOCK_EX)
        # The directory may have been deleted while we waited for the lock.
        if posix.fstat(self.fd).st_nlink == 0:
            posix.close(self.fd)
            raise NotFoundError(posixlite.basename(self.directory))
        return self

    def __exit__(self, *exc: object) -> None:
        posix.close(self.fd)
        self.fd = -1


class StateStore:
    """The state root (runc's --root): finds, creates, reads and removes container records."""

    def __init__(self, root: str):
        self.root = posixlite.abspath(root)

    def path(self, container_id: str) -> str:
        return posixlite.join(self.root, container_id)

    def create(self, container_id: str) -> str:
        """Make the directory of a new container; fail if the id is taken."""
        validate_id(container_id)
        posixlite.makedirs(self.root, mode=0o700, exist_ok=True)
        directory = self.path(container_id)
        try:
            posix.mkdir(directory, 0o700)
        except FileExistsError:
            raise ExistsError(container_id) from None
        return directory

    def lock(self, container_id: str) -> ContainerLock:
        return ContainerLock(self.path(container_id))

    def ids(self) -> list[str]:
        try:
            names = posix.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if posixlite.isfile(posixlite.join(self.root, n, STATE_FILE)))

    def resolve(self, given: str) -> str:
        """The full id for `given`: the id itself, or the one id it is an unambiguous prefix of."""
        if not given:
            raise InvalidIdError("container id cannot be empty")
        if "/" in given or given in (".", ".."):
            raise NotFoundError(given)
        if posixlite.isdir(self.path(given)):
            return given
        matches = [i for i in self.ids() if i.startswith(given)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise NotFoundError(given)
        raise AmbiguousIdError(f"container id {given} is ambiguous: it matches {', '.join(matches)}")

    def read(self, container_id: str) -> dict[str, Any]:
        path = posixlite.join(self.path(container_id), STATE_FILE)
        try:
            raw = posixlite.read_bytes(path)
        except FileNotFoundError:
            raise NotFoundError(container_id) from None
        try:
            record = jsonfast.loads(raw)
        except jsonfast.JSONError as err:
            raise CorruptStateError(f"state of container {container_id} is corrupt ({path}): {err}") from None
        if not isinstance(record, dict) or record.get("id") != container_id:
            raise CorruptStateError(f"state of container {container_id} is corrupt ({path})")
        return record

    def write(self, container_id: str, record: dict[str, Any], exchange: Any = None) -> None:
        """The container's record, atomically (see write_atomic for `exchange`)."""
        write_atomic(posixlite.join(self.path(container_id), STATE_FILE), jsonfast.dumps(record), exchange=exchange)

    def write_config(self, container_id: str, spec: dict[str, Any]) -> None:
        write_atomic(posixlite.join(self.path(container_id), CONFIG_FILE), jsonfast.dumps(spec))

    def read_config(self, container_id: str) -> dict[str, Any]:
        path = posixlite.join(self.path(container_id), CONFIG_FILE)
        try:
            return jsonfast.loads(posixlite.read_bytes(path))
        except FileNotFoundError:
            raise NotFoundError(container_id) from None
        except jsonfast.JSONError as err:
            raise CapsaError(f"config of container {container_id} is corrupt ({path}): {err}") from None

    def remove(self, container_id: str) -> None:
        """Remove the container's directory and everything in it (state, sockets, temp files)."""
        directory = self.path(container_id)
        try:
            names = posix.listdir(directory)
        except FileNotFoundError:
            return
        for name in names:
            unlink_quietly(posixlite.join(directory, name))
        try:
            posix.rmdir(directory)
        except FileNotFoundError:
            pass

    def iter_records(self, warn: Any = None) -> Iterator[dict[str, Any]]:
        """Every container's record; one whose state is corrupt is skipped (and `warn`ed about),
        so that it cannot hide the others."""
        for container_id in self.ids():
            try:
                yield self.read(container_id)
            except NotFoundError:
                continue
            except CorruptStateError as err:
                if warn is not None:
                    warn(f"{err}; `delete --force {container_id}` removes it")


__all__ = [
    "CREATED",
    "CREATING",
    "PAUSED",
    "RUNNING",
    "STOPPED",
    "ContainerLock",
    "StateError",
    "StateStore",
    "check_transition",
    "now_rfc3339",
    "validate_id",
    "write_atomic",
]
