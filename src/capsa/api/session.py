"""What capsa's Python API sets up once per program (setup): its zygote started, the /dev
template, the program a subreaper, what crashed programs left cleaned, and the guard
(capsa.api.guard) that cleans after this one; where the API keeps its state, and the names of
what it makes."""

from __future__ import annotations

import itertools
import os
import threading
import time

from capsa.api.errors import SandboxStartError
from capsa.api.rootfs import API_DIR
from capsa.api.spec import dev_template, host_id_range
from capsa.errors import CapsaError

STATE_ROOT = API_DIR + "/state"
SANDBOX_DIR = API_DIR + "/sandboxes"
_MS_NOSUID, _MS_NODEV = 2, 4

counter = itertools.count()  # names of what this program makes: <pid>-<n>
_setup_lock = threading.Lock()
_set_up = False


def setup() -> None:
    """Once per program: be a subreaper, clean what programs using the API left when they died,
    make the /dev template, and start this program's guard (capsa.api.guard) and zygote
    (capsa.api.zygote, which creates every container of the program: nothing of the runtime's
    create path is loaded here)."""
    global _set_up
    with _setup_lock:
        if _set_up:
            return
        if os.geteuid() != 0:
            from capsa.api.rootless import problems

            missing = problems()
            if missing:
                raise SandboxStartError("an unprivileged program cannot make sandboxes here: " + "; ".join(missing))
        from capsa import process

        os.makedirs(API_DIR, mode=0o755 if os.geteuid() == 0 else 0o700, exist_ok=True)
        os.makedirs(STATE_ROOT, mode=0o700, exist_ok=True)
        os.makedirs(SANDBOX_DIR, mode=0o711, exist_ok=True)
        from capsa.api.zygote import zygote

        zygote().start()  # it imports while this program goes on: ready by its first sandbox
        dev_template()
        process.become_subreaper()
        clean_leftovers()
        _start_guard()
        _set_up = True


_guard_pipe: int | None = None


def _start_guard() -> None:
    """capsa.api.guard: deletes this program's sandboxes once it is gone, however it ends. It
    holds the read end of a pipe whose write end only this program has (close-on-exec; a child
    this program forks without exec holds it too, and delays the clean-up until it ends)."""
    global _guard_pipe
    import subprocess
    import sys

    import capsa

    read_end, write_end = os.pipe()
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(capsa.__file__)))
    code = f"import sys; sys.path.insert(0, {package_parent!r}); from capsa.api.guard import main; sys.exit(main())"
    try:
        subprocess.Popen([sys.executable, "-I", "-c", code], stdin=read_end, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    finally:
        os.close(read_end)
    _guard_pipe = write_end


def _owner_alive(name: str) -> bool:
    """Names of what the API makes start with the maker's pid: api-<pid>-<n>, <pid>-<n>."""
    pid = name.removeprefix("api-").split("-", 1)[0]
    if not pid.isdigit():
        return True
    if int(pid) == os.getpid():
        return True
    # A zombie is gone: the guard sees its pipe's EOF as the program exits, before its parent
    # reaps it.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def clean_leftovers() -> None:
    """Delete the containers and sandbox directories of API users that are gone (crashed)."""
    from capsa.container import Container

    for container in Container.list(STATE_ROOT, warn=lambda message: None):
        if not _owner_alive(container.id):
            try:
                container.delete(force=True)
            except CapsaError:
                pass
    listed = {container.id for container in Container.list(STATE_ROOT, warn=lambda message: None)}
    for name in os.listdir(STATE_ROOT) if os.path.isdir(STATE_ROOT) else []:
        if name.startswith("api-") and name not in listed and not _owner_alive(name):
            _remove_half_made(name)
    for name in os.listdir(SANDBOX_DIR) if os.path.isdir(SANDBOX_DIR) else []:
        if not _owner_alive(name):
            remove_scratch(os.path.join(SANDBOX_DIR, name))


def _remove_half_made(name: str) -> None:
    """A container whose creator died before it wrote its record (create: state directory,
    cgroup, then the record): its cgroups, named after it where the API's user made them (under
    its own cgroups; the same program's are the same), and its state directory."""
    import shutil

    from capsa.cgroups import hierarchies, own_cgroups

    own = own_cgroups()
    for mount_point, controllers in hierarchies().items():
        key = controllers.split(",")[0] if controllers else ""
        directory = os.path.join(mount_point + own.get(key, "/").rstrip("/"), name)
        if not os.path.isdir(directory):
            continue
        try:
            with open(os.path.join(directory, "cgroup.procs")) as f:
                for pid in f.read().split():
                    os.kill(int(pid), 9)
        except OSError:
            pass
        for _ in range(100):
            try:
                os.rmdir(directory)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.01)  # its processes are still dying
    shutil.rmtree(os.path.join(STATE_ROOT, name), ignore_errors=True)


def new_id() -> str:
    return f"api-{os.getpid()}-{next(counter)}"


def make_scratch(size: int) -> str:
    """A tmpfs of `size` bytes for a Sandbox's /work, owned by the sandbox's root. Rootless, a
    directory of the caller's (who is root inside), without a size: it may not mount a tmpfs."""
    from capsa import linux

    host_id = host_id_range()
    directory = os.path.join(SANDBOX_DIR, f"{os.getpid()}-{next(counter)}")
    work = os.path.join(directory, "work")
    os.makedirs(work, mode=0o755)
    if os.geteuid() != 0:
        return work
    try:
        linux.mount("tmpfs", work, "tmpfs", _MS_NOSUID | _MS_NODEV,
                    f"size={size},mode=0755,uid={host_id},gid={host_id}")
    except BaseException:
        remove_scratch(directory)
        raise
    return work


def remove_scratch(directory: str) -> None:
    import shutil

    from capsa import linux

    try:
        linux.umount2(os.path.join(directory, "work"), linux.MNT_DETACH)
    except OSError:
        pass
    shutil.rmtree(directory, ignore_errors=True)
