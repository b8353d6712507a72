"""capsa's command line: runc's global flags and subcommands over the capsa library.

Each subcommand lives in its own module, imported only when it is the one asked for, so that
`capsa state` does not pay for what `capsa create` needs.
"""

from __future__ import annotations

import gc
import posix
import sys

from capsa import posixlite
from capsa.cli.flags import BOOL, STRING, Flag, UsageError, parse
from capsa.errors import CapsaError

# Net new objects between two collections of the youngest generation (Python's default: 700).
# A create keeps ~5,000 (measured, runc's default config.json): start-up never collects.
GC_THRESHOLD = 20_000

GLOBAL_FLAGS = [
    Flag("root", STRING, None, "root directory for storage of container state"),
    Flag("log", STRING, None, "set the log file to write capsa logs to (default is stderr)"),
    Flag("log-format", STRING, "text", "set the log format ('text' (default), or 'json')"),
    Flag("debug", BOOL, help="enable debug logging"),
    Flag("systemd-cgroup", BOOL, help="use systemd to manage cgroups (linux.cgroupsPath is slice:prefix:name)"),
    Flag("rootless", STRING, "auto", "ignore cgroup permission errors ('true', 'false', or 'auto')"),
    Flag("criu", STRING, "criu", "path to the criu binary used for checkpoint and restore"),
    Flag("version,v", BOOL, help="print the version"),
]

# subcommand -> (module under capsa.cli, one-line summary)
COMMANDS = {
    "create": ("create", "create a container"),
    "start": ("start", "executes the user defined process in a created container"),
    "run": ("run", "create and run a container"),
    "state": ("state", "output the state of a container"),
    "list": ("list", "lists containers started by capsa with the given root"),
    "kill": ("kill", "kill sends the specified signal (default: SIGTERM) to the container's init process"),
    "delete": ("delete", "delete any resources held by the container often used with detached container"),
    "exec": ("exec", "execute new process inside the container"),
    "pause": ("pause", "pause suspends all processes inside the container"),
    "resume": ("resume", "resumes all processes that have been previously paused"),
    "ps": ("ps", "ps displays the processes running inside a container"),
    "update": ("update", "update container resource constraints"),
    "events": ("events", "display container events such as OOM notifications, cpu, memory, and IO usage statistics"),
    "spec": ("spec", "create a new specification file"),
    "features": ("features", "show the enabled features"),
    "checkpoint": ("checkpoint", "checkpoint a running container"),
    "restore": ("restore", "restore a container from a previous checkpoint"),
    "sandbox": ("sandbox", "act on a sandbox (pod) as a whole: list, state, pause, resume, kill, delete"),
}

# The annotations that put a container in a sandbox (capsa.sandbox.TYPE_KEYS, tested equal): checked
# here so that a container without them never loads capsa.sandbox.
SANDBOX_TYPE_KEYS = ("io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType", "io.kubernetes.docker.type")


def sandbox_annotated(annotations) -> bool:
    """Does config.json (or a state record) carry a container-type annotation of a CRI family?"""
    return bool(annotations) and any(key in annotations for key in SANDBOX_TYPE_KEYS)


def in_sandbox(root: str, container_id: str, annotations) -> bool:
    """Is the container a sandbox's member or holder (annotations, or a sandbox record by its id:
    a holder adopted without annotations, as podman's infra container)?"""
    return sandbox_annotated(annotations) or posixlite.isdir(posixlite.join(posixlite.abspath(root), "@sandbox", container_id))


class Globals:
    """The global flags, as every subcommand sees them."""

    def __init__(self, parsed):
        if parsed.rootless not in ROOTLESS_VALUES:
            raise UsageError(f"invalid value {parsed.rootless!r} for --rootless: use true, false or auto")
        self.root = parsed.root or default_root()
        self.debug = parsed.debug
        self.systemd_cgroup = parsed.systemd_cgroup
        self.rootless = parsed.rootless
        self.criu = parsed.criu
        if parsed.log_format not in ("text", "json"):
            raise UsageError(f"invalid log format {parsed.log_format!r}: use text or json")
        if parsed.log:
            _check_log_file(parsed.log)
        self._log_settings = (parsed.log, parsed.log_format, parsed.debug)
        self._log = None

    @property
    def log(self):
        """The logger, made on first use: a call that logs nothing does not import it."""
        if self._log is None:
            from capsa.cli.log import Logger

            self._log = Logger(*self._log_settings)
        return self._log

    def warn(self, message: str) -> None:
        """A warning, for library calls that may warn: unlike `g.log.warning`, passing it does
        not make the logger (a call that warns about nothing does not import it)."""
        self.log.warning(message)


def _check_log_file(path: str) -> None:
    """--log must be a file capsa can append to, whatever the subcommand: runc opens it before
    any subcommand runs and fails there; a log that silently goes nowhere hides the errors a
    manager reads from it. Opened (and created, as runc does) once here, closed again: the
    logger reopens it only when something is logged."""
    try:
        fd = posix.open(path, posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT | posix.O_CLOEXEC, 0o644)
    except OSError as err:
        raise UsageError(f"cannot open the log file {path} (--log): {err.strerror}") from None
    posix.close(fd)


# --rootless: auto, or Go's strconv.ParseBool spellings (as runc reads it).
ROOTLESS_VALUES = ("", "auto", "1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False")


def default_root() -> str:
    """runc's rule: $XDG_RUNTIME_DIR/capsa for an unprivileged user (or a non-"root" USER that is
    uid 0 in a user namespace), else /run/capsa. Like runc, the XDG directory is made and given
    the sticky bit, which keeps the XDG cleanup of old files from removing it."""
    xdg = posixlite.getenv("XDG_RUNTIME_DIR")
    if not xdg or not _honor_xdg_runtime_dir():
        return "/run/capsa"
    root = posixlite.join(xdg, "capsa")
    try:
        posixlite.makedirs(root, 0o700, exist_ok=True)
        posix.chmod(root, 0o1700)
    except OSError as err:
        raise CapsaError(f"cannot make the state root {root} (from $XDG_RUNTIME_DIR): {err.strerror}") from None
    return root


def _honor_xdg_runtime_dir() -> bool:
    if posix.geteuid() != 0:
        return True
    from capsa.procfs import in_user_namespace

    # The real root keeps /run/capsa (and ignores /run/user/0) as runc does; uid 0 in a user
    # namespace uses XDG unless USER says it is root.
    return in_user_namespace() and posixlite.getenv("USER", "") != "root"


def main(argv: list[str] | None = None) -> int:
    # The cyclic garbage collector runs every 700 new objects: at start-up, while modules are
    # loaded, and none of it is garbage. A call that lives long (run, exec, events) still collects.
    gc.set_threshold(GC_THRESHOLD)
    argv = sys.argv[1:] if argv is None else argv
    context = None  # the parsed globals, once they are; errors before that go to stderr
    try:
        parsed = parse(argv, GLOBAL_FLAGS)
        if parsed.version:
            return _print_version()
        if parsed.help or not parsed.args or parsed.args[0] == "help":
            return _print_help(parsed.args[1:] if parsed.args else [])
        g = Globals(parsed)
        context = g
        command, rest = parsed.args[0], parsed.args[1:]
        if command not in COMMANDS:
            raise UsageError(f"No help topic for '{command}'")
        module = __import__(f"capsa.cli.{COMMANDS[command][0]}", fromlist=["run"])
        return module.run(g, rest)
    except CapsaError as err:
        return _fail(context, str(err))
    except OSError as err:
        return _fail(context, _describe_os_error(err))
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # noqa: BLE001 - a bug must still end in one clear line, not a traceback
        if "--debug" in argv or "-debug" in argv:
            import traceback

            traceback.print_exc()
        return _fail(context, f"internal error: {type(err).__name__}: {err}")


def _describe_os_error(err: OSError) -> str:
    text = err.strerror or str(err)
    return f"{err.filename}: {text}" if err.filename else text


def _fail(globals_, message: str) -> int:
    if globals_ is None:
        from capsa.cli.log import Logger

        Logger().error(message)
    else:
        globals_.log.error(message)
    return 1


def _print_version() -> int:
    from capsa import OCI_VERSION, __version__

    sys.stdout.write(
        f"capsa version {__version__}\nspec: {OCI_VERSION}\n"
        f"python: {sys.version.split()[0]}\n"
    )
    return 0


def _print_help(topic: list[str]) -> int:
    if topic and topic[0] in COMMANDS:
        module = __import__(f"capsa.cli.{COMMANDS[topic[0]][0]}", fromlist=["run"])
        sys.stdout.write(module.usage())
        return 0
    lines = ["capsa: a runc-compatible OCI container runtime", "", "Usage: capsa [global options] command [command options] [arguments...]", "", "Commands:"]
    lines += [f"   {name:<10}{summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "Global options:"]
    lines += [f"   --{f.names[0]:<16}{f.help}" for f in GLOBAL_FLAGS]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def command_usage(name: str, flags: list[Flag], arguments: str = "<container-id>") -> str:
    from capsa.cli.flags import usage

    return usage(name, COMMANDS[name][1], flags, arguments)


def parse_command(name: str, argv: list[str], flags: list[Flag], interspersed: bool = False):
    """Parse a subcommand's flags; None means help was printed."""
    parsed = parse(argv, flags, interspersed)
    if parsed.help:
        sys.stdout.write(command_usage(name, flags))
        return None
    return parsed


def require_args(parsed, name: str, count: int, exact: bool = True) -> None:
    got = len(parsed.args)
    if got < count or (exact and got > count):
        raise UsageError(f'"{name}" requires {"exactly" if exact else "at least"} {count} argument(s)')
