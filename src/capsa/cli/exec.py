"""capsa exec: run a new process inside a running container (as runc exec)."""

from __future__ import annotations

from capsa.cli import command_usage, parse_command
from capsa.cli.flags import BOOL, INT, LIST, STRING, Flag, UsageError

FLAGS = [
    Flag("console-socket", STRING, None, "path to an AF_UNIX socket which will receive the pty master"),
    Flag("cwd", STRING, None, "current working directory in the container"),
    Flag("env,e", LIST, help="set environment variables"),
    Flag("tty,t", BOOL, help="allocate a pseudo-TTY"),
    Flag("user,u", STRING, None, "UID (format: <uid>[:<gid>])"),
    Flag("additional-gids,g", LIST, help="additional gids"),
    Flag("process,p", STRING, None, "path to the process.json"),
    Flag("detach,d", BOOL, help="detach from the container's process"),
    Flag("pid-file", STRING, None, "specify the file to write the process id to"),
    Flag("process-label", STRING, None, "set the asm process label for the process commonly used with selinux"),
    Flag("apparmor", STRING, None, "set the apparmor profile for the process"),
    Flag("no-new-privs", BOOL, help="set the no new privileges value for the process"),
    Flag("cap,c", LIST, help="add a capability to the bounding set for the process"),
    Flag("preserve-fds", INT, 0, "pass N additional file descriptors to the container"),
    Flag("cgroup", STRING, None, "run the process in an (existing) sub-cgroup"),
    Flag("ignore-paused", BOOL, help="allow exec in a paused container"),
]


def usage() -> str:
    return command_usage("exec", FLAGS, "<container-id> <command> [command options]")


def run(g, argv: list[str]) -> int:
    parsed = parse_command("exec", argv, FLAGS)
    if parsed is None:
        return 0
    if not parsed.args:
        raise UsageError('"exec" requires at least 1 argument')
    if parsed.preserve_fds < 0:
        raise UsageError("--preserve-fds must not be negative")
    from capsa.cli.create import console, inherited_fds
    from capsa.container import Container

    count, listen = inherited_fds(parsed.preserve_fds)  # first: the terminal proxy's sockets must land above them

    container = Container.load(g.root, parsed.args[0])
    process = _process(container, parsed)
    if parsed.detach:
        pid = container.exec(process, console=console(parsed.console_socket, None), inherited_fds=count,
                             listen_fds=listen, ignore_paused=parsed.ignore_paused, sub_cgroup=parsed.cgroup, warn=g.warn)
        _write_pid_file(parsed.pid_file, pid)
        return 0
    from capsa import process as processes
    from capsa.cli.run import exit_code

    processes.become_subreaper()  # the exec'd process is forked by a child that exits
    proxy = None
    if process.get("terminal") and not parsed.console_socket:
        from capsa.terminal import TerminalProxy

        proxy = TerminalProxy()
    pid = container.exec(process, console=console(parsed.console_socket, proxy.child_end if proxy else None),
                         inherited_fds=count, listen_fds=listen, ignore_paused=parsed.ignore_paused,
                         sub_cgroup=parsed.cgroup, warn=g.warn)
    # Our child now (we are its subreaper): its pid cannot be reused before we reap it.
    handle = processes.Process.open(pid)
    _write_pid_file(parsed.pid_file, pid)
    if proxy:
        proxy.receive_master()
    return exit_code(processes.supervise(handle, proxy))


def _process(container, parsed) -> dict:
    """The process to run: --process FILE as it is, or the container's process changed by the flags."""
    if parsed.process:
        if len(parsed.args) > 1:
            raise UsageError("give either --process or a command, not both")
        from capsa.spec import load_json_file, validate_process

        # Checked here: the flags below read it before Container.exec validates it again.
        return validate_process(load_json_file(parsed.process))
    if len(parsed.args) < 2:
        raise UsageError('"exec" needs a command, or --process FILE')
    import copy

    process = copy.deepcopy(container.spec["process"])
    process["args"] = parsed.args[1:]
    process["terminal"] = parsed.tty
    process.pop("consoleSize", None)
    if parsed.cwd:
        process["cwd"] = parsed.cwd
    if parsed.env:
        process["env"] = list(process.get("env") or []) + parsed.env
    if parsed.user:
        uid, _, gid = parsed.user.partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise UsageError(f"--user {parsed.user!r}: give a numeric UID[:GID]")
        process["user"] = dict(process.get("user") or {}, uid=int(uid), gid=int(gid) if gid else 0)
    if parsed.additional_gids:
        if not all(g.isdigit() for g in parsed.additional_gids):
            raise UsageError("--additional-gids takes numeric gids")
        process.setdefault("user", {})["additionalGids"] = [int(g) for g in parsed.additional_gids]
    if parsed.cap:
        caps = process.setdefault("capabilities", {})
        for kind in ("bounding", "effective", "permitted", "ambient"):
            caps[kind] = list(dict.fromkeys(list(caps.get(kind) or []) + parsed.cap))
    if parsed.no_new_privs:
        process["noNewPrivileges"] = True
    if parsed.apparmor:
        process["apparmorProfile"] = parsed.apparmor
    if parsed.process_label:
        process["selinuxLabel"] = parsed.process_label
    return process


def _write_pid_file(path: str | None, pid: int) -> None:
    if path:
        from capsa.cli.create import write_pid_file

        write_pid_file(path, pid)
