"""capsa run: create and start a container, wait for it and exit with its exit code."""

from __future__ import annotations

import posix

from capsa.cli import command_usage, parse_command, require_args
from capsa.cli.create import FLAGS as CREATE_FLAGS
from capsa.cli.create import create_from_flags, inherited_fds
from capsa.cli.flags import BOOL, Flag

FLAGS = CREATE_FLAGS + [
    Flag("detach,d", BOOL, help="detach from the container's process"),
    Flag("keep", BOOL, help="do not delete the container after it exits"),
    Flag("no-subreaper", BOOL, help="disable the use of the subreaper used to reap reparented processes"),
]


def usage() -> str:
    return command_usage("run", FLAGS)


def run(g, argv: list[str]) -> int:
    parsed = parse_command("run", argv, FLAGS)
    if parsed is None:
        return 0
    require_args(parsed, "run", 1)
    fds = inherited_fds(parsed.preserve_fds)  # first: the terminal proxy's sockets must land above them
    if parsed.detach:
        container = create_from_flags(g, parsed, fds)
        return _start_or_clean(container, g)
    from capsa import linux

    # The init is forked by an intermediate child that exits: as a subreaper we inherit the init
    # and can wait for it.
    linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
    from capsa.spec import load_bundle

    spec = load_bundle(parsed.bundle or ".")
    proxy = None
    if not parsed.console_socket and spec["process"].get("terminal"):
        from capsa.cli.terminal import TerminalProxy

        proxy = TerminalProxy()
    container = create_from_flags(g, parsed, fds, console_fd=proxy.child_end if proxy else None, spec=spec)
    if proxy:
        proxy.receive_master()
    status = _start_or_clean(container, g)
    if status:
        return status
    code = wait_forwarding_signals(container.pid, proxy)
    if not parsed.keep:
        container.delete(force=True, warn=g.warn)
    return code


def _start_or_clean(container, g) -> int:
    try:
        container.start(warn=g.warn)
    except BaseException:
        container.delete(force=True)
        raise
    return 0


def wait_forwarding_signals(pid: int, proxy) -> int:
    """Wait for the init, passing on every signal we get; return its exit code the shell's way."""
    import _signal

    def forward(signum, frame):
        try:
            posix.kill(pid, signum)
        except ProcessLookupError:
            pass

    for signum in range(1, _signal.NSIG):
        if signum in (_signal.SIGKILL, _signal.SIGSTOP, _signal.SIGCHLD, _signal.SIGWINCH if proxy else -1):
            continue
        try:
            _signal.signal(signum, forward)
        except (OSError, ValueError):
            pass
    if proxy:
        proxy.copy_until_exit(pid)
    while True:
        waited, status = posix.waitpid(-1, 0)
        if waited == pid:
            break
    if posix.WIFSIGNALED(status):
        return 128 + posix.WTERMSIG(status)
    return posix.WEXITSTATUS(status)
