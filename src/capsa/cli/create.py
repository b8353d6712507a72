"""capsa create: set a container up and leave its init waiting for `capsa start`.

Also what create, run, exec and restore share of the command line: the fds a container inherits
(LISTEN_FDS, --preserve-fds), the console and the pid file, which the library leaves to its caller.
"""

from __future__ import annotations

import posix

from capsa import posixlite
from capsa.cli import command_usage, parse_command, require_args, sandbox_annotated
from capsa.cli.flags import BOOL, INT, STRING, Flag, UsageError
from capsa.errors import CapsaError

FLAGS = [
    Flag("bundle,b", STRING, "", "path to the root of the bundle directory, defaults to the current directory"),
    Flag("console-socket", STRING, None, "path to an AF_UNIX socket which will receive the pty master"),
    Flag("pid-file", STRING, None, "specify the file to write the process id to"),
    Flag("no-pivot", BOOL, help="do not use pivot root to jail process inside rootfs"),
    Flag("no-new-keyring", BOOL, help="do not create a new session keyring for the container"),
    Flag("preserve-fds", INT, 0, "pass N additional file descriptors to the container"),
]


def usage() -> str:
    return command_usage("create", FLAGS)


def run(g, argv: list[str]) -> int:
    parsed = parse_command("create", argv, FLAGS)
    if parsed is None:
        return 0
    require_args(parsed, "create", 1)
    if parsed.preserve_fds < 0:
        raise UsageError("--preserve-fds must not be negative")
    create_from_flags(g, parsed, inherited_fds(parsed.preserve_fds))
    return 0


def create_from_flags(g, parsed, fds: tuple[int, int | None], console_fd: int | None = None, spec: dict | None = None):
    """Container.create with the flags of create and run; writes --pid-file."""
    from capsa.container import Container
    from capsa.rootless import rootless_cgroups

    if spec is None:
        from capsa.spec import load_bundle

        spec = load_bundle(parsed.bundle or ".")
    count, listen = fds
    options = dict(
        console=console(parsed.console_socket, console_fd),
        inherited_fds=count,
        listen_fds=listen,
        no_pivot=parsed.no_pivot,
        no_new_keyring=parsed.no_new_keyring,
        rootless_cgroups=rootless_cgroups(g.rootless),
        systemd_cgroup=g.systemd_cgroup,
        warn=g.warn,
    )
    if sandbox_annotated(spec.get("annotations")):
        # A pod's sandbox or member (CRI annotations): the sandbox layer rewrites the spec and creates it.
        from capsa import sandbox

        container = sandbox.create_container(g.root, parsed.args[0], parsed.bundle or ".", spec, **options)
    else:
        container = Container.create(g.root, parsed.args[0], parsed.bundle or ".", spec=spec, **options)
    if parsed.pid_file:
        try:
            write_pid_file(parsed.pid_file, container.pid)
        except OSError as err:
            from capsa.cli.delete import delete_container

            delete_container(g, container, force=True)  # a sandbox's member leaves it
            raise CapsaError(f"cannot write pid file {parsed.pid_file}: {err.strerror}") from None
    return container


def inherited_fds(preserve_fds: int | None) -> tuple[int, int | None]:
    """The fds after stdio the container inherits: the socket activation ones (LISTEN_FDS, when
    LISTEN_PID is this process), then --preserve-fds; each must be open, as runc requires of the preserved ones. Returns how many
    in all, and how many are socket activation's (None without LISTEN_FDS).

    Called first, before anything is opened: see capsa.launch.require_inherited_fds, which the
    library checks again (without naming the flags).
    """
    if preserve_fds and preserve_fds < 0:
        raise CapsaError("--preserve-fds must not be negative")
    listen = posixlite.getenv("LISTEN_FDS", "")
    if posixlite.getenv("LISTEN_PID", "") != str(posix.getpid()):
        # sd_listen_fds(3) and runc (go-systemd's activation.Files): the fds are this process's
        # only if LISTEN_PID names it; else they were meant for a parent that exec'd or forked us.
        listen = ""
    listen_count = int(listen) if listen.isdigit() else 0
    count = listen_count + (preserve_fds or 0)
    for fd in range(3, 3 + count):
        try:
            posix.fstat(fd)
        except OSError:
            if fd < 3 + listen_count:
                what, first, last = f"LISTEN_FDS={listen_count}", 3, 2 + listen_count
            else:
                what, first, last = f"--preserve-fds {preserve_fds}", 3 + listen_count, 2 + count
            passed = f"fd {first}" if first == last else f"fds {first} to {last}"
            raise CapsaError(f"{what}: fd {fd} is not open (the container is to get {passed}; each must be open)") from None
    return count, (listen_count if listen.isdigit() else None)


def console(socket: str | None, fd: int | None):
    """The console of --console-socket, or of capsa run's terminal proxy (`fd`); None for neither."""
    if socket is None and fd is None:
        return None
    from capsa.launch import Console

    return Console(fd=fd) if fd is not None else Console(socket=socket)


def write_pid_file(path: str, pid: int) -> None:
    from capsa.state import write_atomic

    write_atomic(posixlite.abspath(path), str(pid), 0o644)
