"""capsa create: set a container up and leave its init waiting for `capsa start`."""

from __future__ import annotations

from capsa.cli import command_usage, parse_command, require_args, sandbox_annotated
from capsa.cli.flags import BOOL, INT, STRING, Flag, UsageError

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
    create_from_flags(g, parsed)
    return 0


def create_from_flags(g, parsed, console_fd: int | None = None, spec: dict | None = None):
    from capsa.container import Container
    from capsa.rootless import rootless_cgroups

    if spec is None:
        from capsa.spec import load_bundle

        spec = load_bundle(parsed.bundle or ".")
    options = dict(
        console_socket=parsed.console_socket,
        console_fd=console_fd,
        pid_file=parsed.pid_file,
        no_pivot=parsed.no_pivot,
        no_new_keyring=parsed.no_new_keyring,
        preserve_fds=parsed.preserve_fds,
        rootless_cgroups=rootless_cgroups(g.rootless),
        systemd_cgroup=g.systemd_cgroup,
        warn=g.warn,
    )
    if sandbox_annotated(spec.get("annotations")):
        # A pod's sandbox or member (CRI annotations): the sandbox layer rewrites the spec and creates it.
        from capsa import sandbox

        return sandbox.create_container(g.root, parsed.args[0], parsed.bundle or ".", spec, **options)
    return Container.create(g.root, parsed.args[0], parsed.bundle or ".", spec=spec, **options)
