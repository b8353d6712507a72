"""capsa run: create and start a container, wait for it and exit with its exit code."""

from __future__ import annotations

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
    from capsa import process

    # The init is forked by an intermediate child that exits: as a subreaper we inherit the init
    # and can wait for it.
    process.become_subreaper()
    from capsa.spec import load_bundle

    spec = load_bundle(parsed.bundle or ".")
    proxy = None
    if not parsed.console_socket and spec["process"].get("terminal"):
        from capsa.terminal import TerminalProxy

        proxy = TerminalProxy()
    container = create_from_flags(g, parsed, fds, console_fd=proxy.child_end if proxy else None, spec=spec)
    if proxy:
        proxy.receive_master()
    status = _start_or_clean(container, g)
    if status:
        return status
    exit_status = process.supervise(container.init_process(), proxy)
    if parsed.keep:
        container.record_exit(exit_status)
    else:
        from capsa.cli.delete import delete_container

        delete_container(g, container, force=True)  # a sandbox's member leaves it
    return exit_code(exit_status)


def exit_code(status) -> int:
    """The shell's exit code of a supervised process (1 if its status could not be learnt: it was
    not our child after all)."""
    return status.exit_code if status.known else 1


def _start_or_clean(container, g) -> int:
    try:
        container.start(warn=g.warn)
    except BaseException:
        container.delete(force=True)
        raise
    return 0
