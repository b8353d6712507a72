"""capsa restore: a new container from a CRIU checkpoint (as runc restore)."""

from __future__ import annotations

from capsa.cli import command_usage, parse_command, require_args
from capsa.cli.flags import BOOL, LIST, STRING, Flag

# The flags CriuOptions takes; the rest are restore's own.
CRIU_FLAGS = [
    Flag("image-path", STRING, "", "path to criu image files for restoring"),
    Flag("work-path", STRING, "", "path for saving work files and logs"),
    Flag("tcp-established", BOOL, help="allow open tcp connections"),
    Flag("ext-unix-sk", BOOL, help="allow external unix sockets"),
    Flag("shell-job", BOOL, help="allow shell jobs"),
    Flag("file-locks", BOOL, help="handle file locks, for safety"),
    Flag("manage-cgroups-mode", STRING, "", "cgroups mode: 'soft' (default), 'full', 'strict' or 'ignore'"),
    Flag("empty-ns", LIST, help="create a namespace, but don't restore its properties"),
    Flag("auto-dedup", BOOL, help="enable auto deduplication of memory images"),
    Flag("lazy-pages", BOOL, help="use userfaultfd to lazily restore memory pages"),
    Flag("lsm-profile", STRING, "", "Specify an LSM profile to be used during restore in the form of TYPE:NAME."),
    Flag("lsm-mount-context", STRING, "", "Specify an LSM mount context to be used during restore."),
]
FLAGS = [
    Flag("console-socket", STRING, None, "path to an AF_UNIX socket which will receive the pty master"),
    *CRIU_FLAGS[:7],
    Flag("bundle,b", STRING, "", "path to the root of the bundle directory"),
    Flag("detach,d", BOOL, help="detach from the container's process"),
    Flag("pid-file", STRING, None, "specify the file to write the process id to"),
    Flag("no-subreaper", BOOL, help="disable the use of the subreaper used to reap reparented processes"),
    Flag("no-pivot", BOOL, help="do not use pivot root to jail process inside rootfs (CRIU always pivots: accepted for runc's callers)"),
    *CRIU_FLAGS[7:],
]


def usage() -> str:
    return command_usage("restore", FLAGS)


def run(g, argv: list[str]) -> int:
    parsed = parse_command("restore", argv, FLAGS)
    if parsed is None:
        return 0
    require_args(parsed, "restore", 1)
    from capsa.checkpoint import CriuOptions
    from capsa.cli.create import console, write_pid_file
    from capsa.container import Container
    from capsa.create import CreateConfig
    from capsa.rootless import rootless_cgroups

    options = CriuOptions(**{flag.key: getattr(parsed, flag.key) for flag in CRIU_FLAGS})
    if not parsed.detach and not parsed.no_subreaper:
        from capsa import process

        # The restored init is our child (criu --restore-sibling); as a subreaper we also reap
        # what it leaves behind, as runc restore does.
        process.become_subreaper()
    config = CreateConfig(parsed.args[0], parsed.bundle or ".", console=console(parsed.console_socket, None),
                          rootless_cgroups=rootless_cgroups(g.rootless), systemd_cgroup=g.systemd_cgroup, warn=g.warn)
    container = Container.restore(g.root, config, g.criu, options)
    if parsed.pid_file:
        write_pid_file(parsed.pid_file, container.pid)
    if parsed.detach:
        return 0
    from capsa import process
    from capsa.cli.run import exit_code

    status = process.supervise(container.init_process())
    container.delete(force=True, warn=g.warn)
    return exit_code(status)
