"""exec: a new process in a running managed container (podman's `exec [-it] [-e] [-u] [-w] [-d]`).

The process is the container's own (its config.json's process: environment, capabilities,
rlimits, AppArmor/SELinux, no-new-privileges) with the command, terminal, environment, user and
working directory changed as asked, run through the container's runtime:
    - capsa's library: Container.exec in this process (no runtime binary), which becomes a
      child subreaper first so that it learns the exit status; a terminal is the pty master
      sent back to us and copied to our stdio (capsa.terminal.TerminalProxy);
    - a runc-compatible binary: `RUNTIME exec --process FILE` with our stdio (the runtime
      copies a terminal itself), its errors read from its JSON --log.
Foreground, the result is the process's exit code (128 + N for a signal); our signals are
passed on to it. Detached (-d), it runs with /dev/null as its stdio and the result is None.
"""

from __future__ import annotations

import os

from capsa.manager.errors import InvalidState, ManagerError
from capsa.manager.monitor import error_exit_code


class ExecError(ManagerError):
    def __init__(self, message: str):
        super().__init__(message)
        self.exit_code = error_exit_code(message)


def exec_process(paths, container_id: str, runtime_path: str | None, args: list[str], *, env: list[str] = (),
                 user: str | None = None, workdir: str | None = None, tty: bool = False, interactive: bool = False,
                 detach: bool = False) -> int | None:
    """Run `args` in the running container; its exit code (None when detached)."""
    if not args:
        raise ManagerError("exec needs a command to run in the container")
    from capsa.manager import runtime as runtimes

    runtime = runtimes.for_container(paths, runtime_path)
    state = runtime.state(container_id)
    if state is None or state.get("status") not in ("running", "paused"):
        raise InvalidState(f"container {container_id[:12]} is not running: can only exec in a running container")
    if state["status"] == "paused":
        raise InvalidState(f"container {container_id[:12]} is paused: unpause it first")
    spec = _read_spec(state["bundle"])
    process = build_process(spec.get("process") or {}, args, env=env, tty=tty, workdir=workdir,
                            user=resolve_user(state.get("pid", 0), user) if user else None)
    try:
        return runtime.exec(container_id, process, interactive=interactive, detach=detach)
    except ManagerError as err:
        raise ExecError(str(err)) from None


def _read_spec(bundle: str) -> dict:
    import json

    try:
        with open(os.path.join(bundle, "config.json")) as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise ManagerError(f"cannot read the container's config.json in {bundle}: {err}") from None


def build_process(base: dict, args: list[str], *, env: list[str] = (), tty: bool = False,
                  workdir: str | None = None, user: dict | None = None) -> dict:
    """The exec'd process: the container's process with these changes (-e KEY=VALUE replaces
    KEY; -e KEY takes our own KEY's value, as podman; -w; -u)."""
    import copy

    process = copy.deepcopy(base)
    process["args"] = list(args)
    process["terminal"] = bool(tty)
    process.pop("consoleSize", None)
    environment = list(process.get("env") or [])
    for item in env:
        key, eq, value = item.partition("=")
        if not key:
            raise ManagerError(f"-e {item!r}: give KEY=VALUE or KEY")
        if not eq:
            if key not in os.environ:
                continue
            value = os.environ[key]
        environment = [e for e in environment if e.partition("=")[0] != key] + [f"{key}={value}"]
    if tty and not any(e.startswith("TERM=") for e in environment):
        environment.append("TERM=xterm")  # as podman's exec -t
    process["env"] = environment
    if workdir:
        if not workdir.startswith("/"):
            raise ManagerError(f"-w {workdir!r}: give an absolute path in the container")
        process["cwd"] = workdir
    if user is not None:
        process["user"] = user
    return process


def resolve_user(pid: int, text: str) -> dict:
    """-u USER[:GROUP] (names or numbers) into an OCI user, names looked up in the container's
    /etc/passwd and /etc/group (opened inside its root: a symlink cannot lead out of it)."""
    name, _, group = text.partition(":")
    passwd = _container_file(pid, "/etc/passwd") if not (name.isdigit() and (not group or group.isdigit())) else ""
    uid = gid = None
    if name.isdigit():
        uid = int(name)
        for fields in _entries(passwd):
            if fields[2] == name:
                gid = int(fields[3])
    else:
        for fields in _entries(passwd):
            if fields[0] == name:
                uid, gid = int(fields[2]), int(fields[3])
                break
        if uid is None:
            raise ManagerError(f"-u {text!r}: no user {name!r} in the container's /etc/passwd")
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            found = [fields for fields in _entries(_container_file(pid, "/etc/group")) if fields[0] == group]
            if not found:
                raise ManagerError(f"-u {text!r}: no group {group!r} in the container's /etc/group")
            gid = int(found[0][2])
    return {"uid": uid, "gid": gid if gid is not None else 0}


def _entries(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and not line.startswith("#") and fields[2].isdigit():
            rows.append(fields)
    return rows


def _container_file(pid: int, path: str) -> str:
    from capsa import linux

    try:
        root = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        fd = linux.openat2(root, path, os.O_RDONLY, linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS)
    except OSError:
        return ""
    finally:
        os.close(root)
    with os.fdopen(fd, "rb") as f:
        return f.read(1 << 20).decode(errors="replace")
