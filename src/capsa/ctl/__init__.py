"""capsactl's command line: podman's command names, flags and output over capsa.manager.

Each command is a function `run(ctx, argv) -> exit code` in a module of this package, imported
only when it is the one asked for; it parses its own flags (argparse, as podman's cobra: one
parser per command). Errors the user can cause are ManagerError (or any CapsaError): the message
is printed as podman prints it ("Error: ...") and the exit code is 125, podman's for its own
failures; `run`, `start -a`, `wait` and `exec` exit with the container's code instead.
"""

from __future__ import annotations

import sys

# command -> (module under capsa.ctl, function, one-line help). Groups (container, image, volume,
# system) map their sub-commands onto the same functions, as podman's aliases do.
COMMANDS: dict[str, tuple[str, str, str]] = {
    # containers (capsa.ctl.containers)
    "create": ("containers", "create", "Create but do not start a container"),
    "run": ("containers", "run", "Run a command in a new container"),
    "start": ("containers", "start", "Start one or more containers"),
    "stop": ("containers", "stop", "Stop one or more containers"),
    "kill": ("containers", "kill", "Kill one or more running containers with a specific signal"),
    "restart": ("containers", "restart", "Restart one or more containers"),
    "rm": ("containers", "rm", "Remove one or more containers"),
    "ps": ("containers", "ps", "List containers"),
    "inspect": ("containers", "inspect", "Display the configuration of object denoted by ID"),
    "wait": ("containers", "wait", "Block on one or more containers"),
    "rename": ("containers", "rename", "Rename an existing container"),
    "pause": ("containers", "pause", "Pause all the processes in one or more containers"),
    "unpause": ("containers", "unpause", "Unpause the processes in one or more containers"),
    "top": ("containers", "top", "Display the running processes of a container"),
    "stats": ("containers", "stats", "Display a live stream of container resource usage statistics"),
    "cp": ("containers", "cp", "Copy files/folders between a container and the local filesystem"),
    "export": ("containers", "export", "Export container's filesystem contents as a tar archive"),
    "mount": ("containers", "mount", "Mount a working container's root filesystem"),
    "unmount": ("containers", "unmount", "Unmount working container's root filesystem"),
    "umount": ("containers", "unmount", "Unmount working container's root filesystem"),
    "exec": ("attach", "exec_command", "Run a process in a running container"),
    # monitor, logs, events (capsa.ctl.logs, capsa.ctl.events, capsa.ctl.attach)
    "logs": ("logs", "logs", "Fetch the logs of one or more containers"),
    "events": ("events", "events", "Show podman-style events"),
    "attach": ("attach", "attach", "Attach to a running container"),
    # images (capsa.ctl.images)
    "images": ("images", "images", "List images in local storage"),
    "pull": ("images", "pull", "Pull an image from a registry"),
    "push": ("images", "push", "Push an image to a specified destination"),
    "load": ("images", "load", "Load image(s) from a tar archive"),
    "save": ("images", "save", "Save image(s) to an archive"),
    "tag": ("images", "tag", "Add an additional name to a local image"),
    "untag": ("images", "untag", "Remove names from a local image"),
    "rmi": ("images", "rmi", "Remove one or more images from local storage"),
    "import": ("images", "import_", "Import a tarball to create a filesystem image"),
    "history": ("images", "history", "Show history of a specified image"),
    "login": ("images", "login", "Log in to a container registry"),
    "logout": ("images", "logout", "Log out of a container registry"),
    # volumes and the system (capsa.ctl.volumes, capsa.ctl.system)
    "info": ("system", "info", "Display capsactl system information"),
    "version": ("system", "version", "Display the capsactl version information"),
}

GROUPS: dict[str, dict[str, str]] = {
    "container": {"create": "create", "run": "run", "start": "start", "stop": "stop", "kill": "kill",
                  "restart": "restart", "rm": "rm", "ls": "ps", "list": "ps", "ps": "ps",
                  "inspect": "container-inspect", "wait": "wait", "rename": "rename", "pause": "pause",
                  "unpause": "unpause", "top": "top", "stats": "stats", "cp": "cp", "export": "export",
                  "mount": "mount", "unmount": "unmount", "umount": "unmount", "exec": "exec",
                  "logs": "logs", "attach": "attach", "prune": "container-prune", "exists": "container-exists",
                  "cleanup": "container-cleanup", "checkpoint": "container-checkpoint",
                  "restore": "container-restore"},
    "image": {"ls": "images", "list": "images", "pull": "pull", "push": "push", "load": "load", "save": "save",
              "tag": "tag", "untag": "untag", "rm": "rmi", "inspect": "image-inspect", "prune": "image-prune",
              "import": "import", "exists": "image-exists", "history": "image-history"},
    "volume": {"create": "volume-create", "ls": "volume-ls", "list": "volume-ls", "inspect": "volume-inspect",
               "rm": "volume-rm", "prune": "volume-prune", "exists": "volume-exists"},
    "network": {"create": "network-create", "ls": "network-ls", "list": "network-ls", "inspect": "network-inspect",
                "rm": "network-rm", "remove": "network-rm", "exists": "network-exists", "prune": "network-prune"},
    "pod": {"create": "pod-create", "start": "pod-start", "stop": "pod-stop", "kill": "pod-kill",
            "pause": "pod-pause", "unpause": "pod-unpause", "restart": "pod-restart", "rm": "pod-rm",
            "ps": "pod-ps", "ls": "pod-ps", "list": "pod-ps", "inspect": "pod-inspect", "top": "pod-top",
            "logs": "pod-logs", "exists": "pod-exists", "prune": "pod-prune"},
    "system": {"info": "info", "df": "system-df", "prune": "system-prune", "events": "events",
               "migrate": "system-refresh"},
    "healthcheck": {"run": "healthcheck-run"},
}

# Sub-commands reachable only through a group.
COMMANDS.update({
    "container-inspect": ("containers", "container_inspect", "Display the configuration of a container"),
    "container-prune": ("containers", "prune", "Remove all non running containers"),
    "container-exists": ("containers", "exists", "Check if a container exists in local storage"),
    "container-cleanup": ("containers", "cleanup", "Clean up network and mountpoints of one or more containers"),
    "container-checkpoint": ("checkpoint", "checkpoint", "Checkpoint one or more containers"),
    "container-restore": ("checkpoint", "restore", "Restore one or more containers from a checkpoint"),
    "image-inspect": ("images", "inspect", "Display the configuration of an image"),
    "image-prune": ("images", "prune", "Remove unused images"),
    "image-exists": ("images", "exists", "Check if an image exists in local storage"),
    "image-history": ("images", "history", "Show history of a specified image"),
    "volume-create": ("volumes", "create", "Create a new volume"),
    "volume-ls": ("volumes", "ls", "List volumes"),
    "volume-inspect": ("volumes", "inspect", "Display detailed information on one or more volumes"),
    "volume-rm": ("volumes", "rm", "Remove one or more volumes"),
    "volume-prune": ("volumes", "prune", "Remove all unused volumes"),
    "volume-exists": ("volumes", "exists", "Check if volume exists"),
    "network-create": ("network", "create", "Create a network"),
    "network-ls": ("network", "ls", "List networks"),
    "network-inspect": ("network", "inspect", "Display the configuration of one or more networks"),
    "network-rm": ("network", "rm", "Remove one or more networks"),
    "network-exists": ("network", "exists", "Check if a network exists"),
    "network-prune": ("network", "prune", "Remove networks no container uses"),
    "pod-create": ("pods", "create", "Create a new empty pod"),
    "pod-start": ("pods", "start", "Start one or more pods"),
    "pod-stop": ("pods", "stop", "Stop one or more pods"),
    "pod-kill": ("pods", "kill", "Send the specified signal or SIGKILL to containers in a pod"),
    "pod-pause": ("pods", "pause", "Pause one or more pods"),
    "pod-unpause": ("pods", "unpause", "Unpause one or more pods"),
    "pod-restart": ("pods", "restart", "Restart one or more pods"),
    "pod-rm": ("pods", "rm", "Remove one or more stopped pods and containers"),
    "pod-ps": ("pods", "ps", "List pods"),
    "pod-inspect": ("pods", "inspect", "Display a pod configuration"),
    "pod-top": ("pods", "top", "Display the running processes of containers in a pod"),
    "pod-logs": ("pods", "logs", "Fetch logs for pod with one or more containers"),
    "pod-exists": ("pods", "exists", "Check if a pod exists in local storage"),
    "pod-prune": ("pods", "prune", "Remove all stopped pods and their containers"),
    "system-df": ("system", "df", "Show capsactl disk usage"),
    "system-prune": ("system", "prune", "Remove unused data"),
    "system-refresh": ("system", "refresh", "Refresh the store's state (as after a reboot)"),
    "healthcheck-run": ("health", "run", "Run the health check of a container"),
})

USAGE = """Usage: capsactl [options] COMMAND [ARG...]

Manage containers, images and volumes (podman's commands, over capsa).

Options:
  --root DIR        storage root (default /var/lib/capsa; rootless ~/.local/share/capsa)
  --runroot DIR     run-time files (default /run/capsa/@manager; rootless $XDG_RUNTIME_DIR/capsa/@manager)
  --runtime PATH    drive this runc-compatible runtime (runc, crun, capsa) through its command line
                    instead of capsa's library in process
  --log-level LVL   error (default), warn, info or debug
  --hooks-dir DIR   OCI hooks directory (repeatable; default /usr/share/containers/oci/hooks.d and
                    /etc/containers/oci/hooks.d)
  -v, --version     print the version

Commands:
"""

GLOBAL_WITH_VALUE = ("--root", "--runroot", "--runtime", "--log-level", "--hooks-dir", "--events-backend",
                     "--cgroup-manager")
GLOBAL_REPEATED = ("--hooks-dir",)  # given several times, a list of values in order


class Context:
    """What every command gets: the global options, the paths, and the store opened on first use."""

    def __init__(self, options: dict[str, str]):
        self.options = options
        self.runtime = options.get("--runtime")
        self.log_level = options.get("--log-level", "error")
        self._paths = None
        self._store = None

    @property
    def paths(self):
        if self._paths is None:
            from capsa.manager.paths import Paths

            self._paths = Paths.default(self.options.get("--root"), self.options.get("--runroot"))
        return self._paths

    @property
    def store(self):
        if self._store is None:
            from capsa.manager.store import Store

            self._store = Store(self.paths)
        return self._store

    @property
    def images(self):
        from capsa.manager.images import ImageStore

        return ImageStore(self.store)


def split_globals(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """The global options before the command, and the rest (command and its arguments)."""
    options: dict[str, str] = {}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name in GLOBAL_WITH_VALUE:
            if not eq:
                if i + 1 >= len(argv):
                    raise UsageError(f"flag needs an argument: {name}")
                i += 1
                value = argv[i]
            if name in GLOBAL_REPEATED:
                options.setdefault(name, []).append(value)  # type: ignore[attr-defined]
            else:
                options[name] = value
        elif arg in ("-h", "--help", "-v", "--version"):
            options[arg] = ""
        else:
            raise UsageError(f"unknown flag: {arg}")
        i += 1
    return options, argv[i:]


class UsageError(Exception):
    pass


def resolve_command(rest: list[str]) -> tuple[str, list[str]]:
    """The command's key in COMMANDS and its arguments (a group's sub-command included)."""
    name, args = rest[0], rest[1:]
    if name in GROUPS:
        if not args or args[0] in ("-h", "--help"):
            raise UsageError(f"capsactl {name} needs a sub-command: {', '.join(sorted(GROUPS[name]))}")
        sub = GROUPS[name].get(args[0])
        if sub is None:
            raise UsageError(f"unknown command {args[0]!r} for \"capsactl {name}\"")
        return sub, args[1:]
    if name not in COMMANDS or "-" in name:
        raise UsageError(f"unrecognized command `capsactl {name}`")
    return name, args


def print_usage(stream) -> None:
    stream.write(USAGE)
    for name, (_, _, summary) in sorted(COMMANDS.items()):
        if "-" not in name:
            stream.write(f"  {name:<12} {summary}\n")
    for group in sorted(GROUPS):
        stream.write(f"  {group:<12} Manage {group}s\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        options, rest = split_globals(argv)
        if "-v" in options or "--version" in options:
            from capsa import __version__

            print(f"capsactl version {__version__}")
            return 0
        if not rest or "-h" in options or "--help" in options:
            print_usage(sys.stdout if rest or options else sys.stderr)
            return 0 if options else 125
        key, args = resolve_command(rest)
    except UsageError as err:
        sys.stderr.write(f"Error: {err}\nSee 'capsactl --help'\n")
        return 125
    module_name, function, _ = COMMANDS[key]
    import importlib

    from capsa.errors import CapsaError

    ctx = Context(options)
    try:
        module = importlib.import_module(f"capsa.ctl.{module_name}")
        return getattr(module, function)(ctx, args)
    except CapsaError as err:
        sys.stderr.write(f"Error: {err}\n")
        return getattr(err, "exit_code", 125)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
