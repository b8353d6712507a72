"""capsactl's container commands: podman's create, run, start, stop, kill, restart, rm, ps,
inspect, wait, rename, pause, unpause, top, stats, cp, export, mount, unmount, container prune,
container exists, container cleanup (exec and attach: capsa.ctl.attach, the io part's).

Each parses its flags as podman's does and calls capsa.manager.containers.
"""

from __future__ import annotations

import argparse
import sys

from capsa.manager.errors import ManagerError


def _manager(ctx):
    from capsa.manager.containers import Containers

    return Containers(ctx.store)


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    # -h is --hostname in create/run, as in podman: help is --help only.
    parser = argparse.ArgumentParser(prog=f"capsactl {prog}", description=description, add_help=False)
    parser.add_argument("--help", action="help", help="show this help and exit")
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str]):
    try:
        return parser.parse_args(argv)
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise SystemExit(125) from None
        raise


def _each(names: list[str], action, quiet_errors: bool = False) -> int:
    """Run `action(name)` for each name, printing podman's "Error: ..." for each failure; the
    exit code is 125 if any failed (the last error's code), else 0."""
    from capsa.errors import CapsaError

    code = 0
    for name in names:
        try:
            action(name)
        except CapsaError as err:
            sys.stderr.write(f"Error: {err}\n")
            code = getattr(err, "exit_code", 125)
    return code


# --- create and run ----------------------------------------------------------------------------------

def _add_create_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--name", help="assign a name to the container")
    add("-e", "--env", action="append", default=[], help="set an environment variable (KEY=VALUE, or KEY)")
    add("--env-file", action="append", default=[], help="read environment variables from a file")
    add("-v", "--volume", action="append", default=[], dest="volumes",
        help="bind mount a volume: HOST-DIR:CONTAINER-DIR[:ro] or NAME:CONTAINER-DIR[:ro]")
    add("--tmpfs", action="append", default=[], help="mount a tmpfs: CONTAINER-DIR[:OPTIONS]")
    add("-w", "--workdir", help="working directory inside the container")
    add("-u", "--user", help="user[:group] to run as (name or id)")
    add("--entrypoint", help="override the image's ENTRYPOINT (a word, or a JSON array)")
    add("-h", "--hostname", help="the container's host name")
    add("--read-only", action="store_true", help="mount the container's root filesystem read-only")
    add("-m", "--memory", help="memory limit (such as 512m, 1g)")
    add("--cpus", help="number of CPUs")
    add("--pids-limit", type=int, help="limit on the number of processes (-1: none)")
    add("--cap-add", action="append", default=[], help="add a capability (or ALL)")
    add("--cap-drop", action="append", default=[], help="drop a capability (or ALL)")
    add("--security-opt", action="append", default=[],
        help="seccomp=unconfined|PROFILE, no-new-privileges, label=..., apparmor=...")
    add("--init", action="store_true", help="run an init (catatonit) as PID 1 that forwards signals and reaps")
    add("-l", "--label", action="append", default=[], dest="labels", help="set a label KEY=VALUE")
    add("--stop-signal", help="signal to stop the container (default: the image's, else SIGTERM)")
    add("--stop-timeout", type=int, help="seconds to wait before killing after the stop signal (default 10)")
    add("--network", "--net", help="bridge, a network's name (or several, comma-separated), none (default) "
        "or host")
    add("-p", "--publish", action="append", default=[], dest="ports",
        help="publish a port: [ip:][hostPort:]containerPort[/tcp|udp|sctp] (bridge networks)")
    add("--rm", action="store_true", help="remove the container when it exits")
    add("--restart", help="restart policy: no (default), on-failure[:N], always, unless-stopped")
    add("-i", "--interactive", action="store_true", help="keep STDIN open")
    add("-t", "--tty", action="store_true", help="allocate a pseudo-TTY")
    add("--log-opt", action="append", default=[], help="logging driver options (max-size=, max-file=)")
    add("--pull", choices=["always", "missing", "never", "newer"], default="missing", help="pull policy")
    add("--pod", help="run in this pod (name or ID), or new:NAME to create the pod first")
    _add_health_flags(parser)
    add("--requires", action="append", default=[],
        help="containers (comma-separated names or ids) started before this one, recursively")
    add("--annotation", action="append", default=[], dest="annotations",
        help="add an annotation to the OCI spec: KEY=VALUE (matched by OCI hooks directories)")
    add("image")
    add("command", nargs=argparse.REMAINDER)


def _add_health_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--health-cmd", help="health check command: a string (run by /bin/sh -c), a JSON array (run directly), "
        "or none")
    add("--health-interval", help="time between health checks (default 30s; disable: only by hand)")
    add("--health-timeout", help="a health check running longer is killed and fails (default 30s)")
    add("--health-retries", help="failures in a row that make the container unhealthy (default 3)")
    add("--health-start-period", help="failures during this time after start do not count (default 0s)")
    add("--health-on-failure", help="once unhealthy: none (default), kill, restart or stop")
    add("--no-healthcheck", action="store_true", help="no health check, not even the image's")


def _health_options(args) -> dict:
    """The --health-* flags for the manager (capsa.manager.health checks them)."""
    retries = args.health_retries
    if retries is not None:
        try:
            retries = int(retries)
        except ValueError:
            raise ManagerError(f"invalid --health-retries {retries!r}: a whole number of at least 1") from None
    return {"cmd": args.health_cmd, "interval": args.health_interval, "timeout": args.health_timeout,
            "retries": retries, "start_period": args.health_start_period, "on_failure": args.health_on_failure,
            "none": args.no_healthcheck}


def _create_options(ctx, args, argv: list[str]) -> dict:
    return {
        "name": args.name, "env": args.env, "env_file": args.env_file, "volumes": args.volumes,
        "tmpfs": args.tmpfs, "workdir": args.workdir, "user": args.user, "entrypoint": args.entrypoint,
        "hostname": args.hostname, "read_only": args.read_only, "memory": args.memory, "cpus": args.cpus,
        "pids_limit": args.pids_limit, "cap_add": args.cap_add, "cap_drop": args.cap_drop,
        "security_opt": args.security_opt, "init": args.init, "labels": args.labels,
        "stop_signal": args.stop_signal, "stop_timeout": args.stop_timeout, "network": args.network,
        "rm": args.rm, "interactive": args.interactive, "tty": args.tty, "command": args.command,
        "ports": args.ports, "restart": args.restart,
        "hooks_dirs": ctx.options.get("--hooks-dir"),  # a list: the global flag repeats
        "requires": [name for item in args.requires for name in item.split(",") if name],
        "annotations": args.annotations,
        "runtime": ctx.runtime, "log_opts": args.log_opt, "create_command": ["capsactl", *argv],
        "pod": args.pod,
    }


def _image_for(ctx, reference: str, pull: str) -> str:
    """The image to create from: pulled first if missing (registry.pull_if_missing; --pull=always
    and newer are taken as missing)."""
    from capsa.manager.errors import NoSuchImage

    try:
        ctx.images.resolve(reference)
        return reference  # here already: the registry module (ssl, http) is not even imported
    except NoSuchImage:
        if pull == "never":
            raise
    from capsa.manager.registry import pull_if_missing

    pull_if_missing(ctx.store, reference, _pull_progress())
    return reference


def _pull_progress():
    """The images part's progress: bars on a terminal, lines otherwise (on stderr)."""
    from capsa.manager.progress import Progress

    return Progress(sys.stderr)


def _create(ctx, args, argv):
    manager = _manager(ctx)
    image = _image_for(ctx, args.image, args.pull)
    options = dict(_create_options(ctx, args, argv), healthcheck=_health_options(args))
    if not (options.get("pod") or "").startswith("new:"):
        return manager, manager.create(image, options)
    from capsa.manager.pods import Pods  # --pod new:NAME: the pod first, removed if the container fails

    pods = Pods(manager)
    pod = pods.create({"name": options["pod"][4:], "runtime": ctx.runtime, "hooks_dirs": options["hooks_dirs"]})
    try:
        return manager, manager.create(image, dict(options, pod=pod.id))
    except BaseException:
        pods.remove(pod.id, force=True)
        raise


def create(ctx, argv: list[str]) -> int:
    parser = _parser("create", "Create but do not start a container")
    _add_create_flags(parser)
    args = _parse(parser, argv)
    _, container = _create(ctx, args, argv)
    print(container.id)
    return 0


def run(ctx, argv: list[str]) -> int:
    parser = _parser("run", "Run a command in a new container")
    _add_create_flags(parser)
    parser.add_argument("-d", "--detach", action="store_true", help="run in the background and print its ID")
    _add_attach_flags(parser)
    args = _parse(parser, argv)
    _check_detach_keys(args)
    manager, container = _create(ctx, args, argv)
    if args.detach:
        try:
            manager.start(container.id)
        except BaseException:
            if args.rm:
                _remove_quietly(manager, container.id)
            raise
        print(container.id)
        return 0
    return _start_attached(manager, container, args)


def _add_attach_flags(parser: argparse.ArgumentParser) -> None:
    from capsa.ctl.attach import _boolean

    parser.add_argument("--detach-keys", default=None,
                        help="the keys that detach from the container (default ctrl-p,ctrl-q; '' disables)")
    parser.add_argument("--sig-proxy", type=_boolean, nargs="?", const=True, default=True,
                        help="pass the signals capsactl receives on to the container (default true)")


def _check_detach_keys(args) -> None:
    from capsa.manager import attach as attaching

    if args.detach_keys is None:
        args.detach_keys = attaching.DEFAULT_DETACH_KEYS
    attaching.parse_detach_keys(args.detach_keys)  # a bad value fails before anything is made


def _start_attached(manager, container, args, interactive: bool | None = None) -> int:
    """A foreground `run` and `start -a`: connected to the container's monitor before its process
    starts (capsa.manager.attach: no output is lost), our stdin to it with -i, until it exits (its
    code) or we detach (0, and it goes on). The exit hook leaves a --rm container to us while we
    are attached, so that we have its code before it goes."""
    from capsa.manager import attach as attaching

    autoremove = bool(container.config.get("AutoRemove"))
    interactive = bool(container.config.get("Interactive")) if interactive is None else interactive
    tty = bool(container.config.get("Tty"))
    sessions = []

    def connect(current) -> None:
        sessions.append(attaching.connect(manager.paths, current.id))

    manager.attach_marker(container.id, True)
    code = None
    cleaned = False
    try:
        manager.start(container.id, before_start=connect)
        if not sessions:  # it was running already (start -a of a running container)
            connect(container)
        code = sessions[0].run(stdin=0 if interactive else None, tty=tty, detach_keys=args.detach_keys,
                               sig_proxy=args.sig_proxy)
        if code is None:
            return 0  # detached: the container goes on
        cleaned = manager.clean_up_after_exit(container.id, code)  # recorded before we return, by us or the hook
        return code
    finally:
        for session in sessions:
            session.close()
        if autoremove and code is not None:
            _remove_quietly(manager, container.id, wait_monitor=not cleaned)
        elif manager.exists(container.id):
            manager.attach_marker(container.id, False)


def _remove_quietly(manager, container_id: str, wait_monitor: bool = True) -> None:
    try:
        manager.remove(container_id, force=True, timeout=0, wait_monitor=wait_monitor)
    except ManagerError:
        pass


# --- start, stop, kill, restart, rm, wait ------------------------------------------------------------------

def start(ctx, argv: list[str]) -> int:
    parser = _parser("start", "Start one or more containers")
    parser.add_argument("-a", "--attach", action="store_true", help="attach to the container's output and wait")
    parser.add_argument("-i", "--interactive", action="store_true", help="attach our stdin (with -a)")
    _add_attach_flags(parser)
    parser.add_argument("--all", action="store_true", help="start every created or exited container")
    parser.add_argument("--filter", action="append", default=[],
                        help="with --all: KEY=VALUE (restart-policy=, and ps's keys)")
    parser.add_argument("containers", nargs="*")
    args = _parse(parser, argv)
    manager = _manager(ctx)
    if args.all or args.filter:
        return _start_all(manager, args)
    if not args.containers:
        raise ManagerError("give at least one container name or ID (or --all)")
    if args.attach:
        if len(args.containers) != 1:
            raise ManagerError("start --attach takes one container")
        _check_detach_keys(args)
        container = manager.get(args.containers[0])
        interactive = args.interactive and bool(container.config.get("Interactive"))
        return _start_attached(manager, container, args, interactive)
    return _each(args.containers, lambda name: (manager.start(name), print(name)))


def _start_all(manager, args) -> int:
    """start --all [--filter ...]: the boot command (contrib/systemd/capsactl-restart.service) is
    `start --all --filter restart-policy=always --filter restart-policy=unless-stopped`."""
    if not args.all:
        raise ManagerError("--filter needs --all")
    if args.containers or args.attach:
        raise ManagerError("--all takes no container names and no --attach")
    from capsa.manager.policy import POLICIES

    for item in args.filter:
        key, _, value = item.partition("=")
        if key == "restart-policy" and value not in POLICIES:
            raise ManagerError(f"--filter {item!r}: the restart policy is no, on-failure, always or unless-stopped")
    names = [c.name for c in manager.list() if c.status in ("created", "exited") and _start_matches(c, args.filter)]
    return _each(names, lambda name: (manager.start(name), print(name)))


def _start_matches(container, filters: list[str]) -> bool:
    """restart-policy=NAME (several: any of them): the container's policy; unless-stopped only
    where the user did not stop it (docker's rule at boot); the other keys are ps's."""
    from capsa.manager.restarts import policy_of

    wanted = [item.partition("=")[2] for item in filters if item.partition("=")[0] == "restart-policy"]
    others = [item for item in filters if item.partition("=")[0] != "restart-policy"]
    if wanted:
        rule = policy_of(container)
        stopped = bool(container.state.get("StoppedByUser"))
        if rule.name not in wanted or (rule.name == "unless-stopped" and not rule.starts_at_boot(stopped)):
            return False
    return _matches(container, others)


def stop(ctx, argv: list[str]) -> int:
    parser = _parser("stop", "Stop one or more containers")
    parser.add_argument("-t", "--time", type=int, help="seconds to wait before killing the container")
    parser.add_argument("-a", "--all", action="store_true", help="stop all running containers")
    parser.add_argument("-i", "--ignore", action="store_true", help="ignore containers that do not exist")
    parser.add_argument("containers", nargs="*")
    args = _parse(parser, argv)
    manager = _manager(ctx)
    names = _names_or_all(manager, args, lambda c: c.status in ("running", "paused", "stopping"))
    return _each(names, lambda name: _ignoring(args.ignore, lambda: (manager.stop(name, args.time), print(name))))


def _ignoring(ignore: bool, action) -> None:
    from capsa.manager.errors import NoSuchContainer

    try:
        action()
    except NoSuchContainer:
        if not ignore:
            raise


def _names_or_all(manager, args, selected) -> list[str]:
    if getattr(args, "all", False):
        if args.containers:
            raise ManagerError("--all and container names cannot be given together")
        return [c.name for c in manager.list() if selected(c)]
    if not args.containers:
        raise ManagerError("give at least one container name or ID (or --all)")
    return args.containers


def kill(ctx, argv: list[str]) -> int:
    parser = _parser("kill", "Kill one or more running containers with a specific signal")
    parser.add_argument("-s", "--signal", default="KILL", help="signal to send (default SIGKILL)")
    parser.add_argument("-a", "--all", action="store_true")
    parser.add_argument("containers", nargs="*")
    args = _parse(parser, argv)
    from capsa.manager.ocispec import parse_signal

    signal = parse_signal(args.signal, "--signal")
    manager = _manager(ctx)
    names = _names_or_all(manager, args, lambda c: c.status in ("running", "paused"))
    return _each(names, lambda name: (manager.kill(name, signal), print(name)))


def restart(ctx, argv: list[str]) -> int:
    parser = _parser("restart", "Restart one or more containers")
    parser.add_argument("-t", "--time", type=int, help="seconds to wait before killing the container")
    parser.add_argument("-a", "--all", action="store_true")
    parser.add_argument("--running", action="store_true", help="restart only running containers")
    parser.add_argument("containers", nargs="*")
    args = _parse(parser, argv)
    manager = _manager(ctx)
    names = _names_or_all(manager, args, lambda c: not args.running or c.status == "running")
    return _each(names, lambda name: (manager.restart(name, args.time), print(manager.get(name).id)))


def rm(ctx, argv: list[str]) -> int:
    parser = _parser("rm", "Remove one or more containers")
    parser.add_argument("-f", "--force", action="store_true", help="stop and remove a running container")
    parser.add_argument("-v", "--volumes", action="store_true", help="remove the container's anonymous volumes")
    parser.add_argument("-a", "--all", action="store_true", help="remove all containers")
    parser.add_argument("-i", "--ignore", action="store_true", help="ignore containers that do not exist")
    parser.add_argument("-t", "--time", type=int, help="seconds to wait for stop before killing (with -f)")
    parser.add_argument("--depend", action="store_true",
                        help="also remove, first, the containers that require these (recursively)")
    parser.add_argument("containers", nargs="*")
    args = _parse(parser, argv)
    manager = _manager(ctx)
    if args.all and args.containers:
        raise ManagerError("--all and container names cannot be given together")
    # --all newest first: a container is newer than those it requires, so dependents go first
    names = _without_infra(manager, manager.all_ids()[::-1]) if args.all \
        else _names_or_all(manager, args, lambda c: True)
    if args.depend and not args.all:
        if args.ignore:
            names = [name for name in names if manager.exists(name)]
        names = manager.removal_order(names)  # with the containers that require them, dependents first
    # podman prints each container as it was named on the command line
    return _each(names, lambda name: _ignoring(args.ignore, lambda: (
        manager.remove(name, force=args.force, volumes=args.volumes, timeout=args.time), print(name))))


def _without_infra(manager, ids: list[str]) -> list[str]:
    """rm --all leaves pods' infra containers to pod rm, as podman's."""
    infra = {row["id"] for row in manager.store.query(
        "SELECT id FROM containers WHERE json_valid(config) AND json_extract(config, '$.IsInfra')")}
    return [i for i in ids if i not in infra]


def wait(ctx, argv: list[str]) -> int:
    parser = _parser("wait", "Block on one or more containers")
    parser.add_argument("--condition", action="append", default=[],
                        help="state to wait for (default exited; also running, paused, created, stopped)")
    parser.add_argument("-i", "--interval", default="250ms", help="time between checks (such as 250ms, 1s)")
    parser.add_argument("containers", nargs="+")
    args = _parse(parser, argv)
    conditions = tuple("exited" if c == "stopped" else c for c in args.condition) or ("exited",)
    interval = _duration(args.interval)
    manager = _manager(ctx)
    codes = []

    def one(name):
        codes.append(manager.wait(name, conditions, interval))
        print(codes[-1])

    failed = _each(args.containers, one)
    return failed if failed else 0


def _duration(text: str) -> float:
    text = text.strip()
    for suffix, factor in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if text.endswith(suffix):
            try:
                return float(text[: -len(suffix)]) * factor
            except ValueError:
                break
    try:
        return float(text) / 1000  # podman: a bare number is milliseconds
    except ValueError:
        raise ManagerError(f"invalid duration {text!r} (such as 250ms, 1s)") from None


# --- ps and inspect ----------------------------------------------------------------------------------

PS_HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedHuman": "CREATED",
              "Created": "CREATED", "CreatedAt": "CREATED", "RunningFor": "CREATED", "Status": "STATUS",
              "Ports": "PORTS", "Names": "NAMES", "State": "STATE", "ExitCode": "EXIT CODE", "Pid": "PID",
              "Labels": "LABELS", "Mounts": "MOUNTS", "Size": "SIZE", "Networks": "NETWORKS", "Pod": "POD ID",
              "PodName": "PODNAME", "ImageID": "IMAGE ID"}
PS_HEADERS["Dependencies"] = "DEPENDENCIES"  # --requires (issue 18, deps)


def status_text(container) -> str:
    """podman's STATUS column: Up 5 seconds ago, Exited (0) 3 minutes ago, Created, Paused, ..."""
    from capsa.ctl.output import human_time

    state = container.state
    if container.status in ("running", "stopping"):
        up = f"Up {human_time(state.get('StartedAt', ''))}" if state.get("StartedAt") else "Up"
        return up + _health_suffix(container)
    if container.status == "paused":
        return "Paused"
    if container.status == "exited":
        return f"Exited ({container.exit_code}) {human_time(state.get('FinishedAt', ''))}"
    return container.status.capitalize()


def _health_suffix(container) -> str:
    """podman's " (healthy)" after Up: the health status of a container with a health check."""
    status = health_status(container)
    return f" ({status})" if status else ""


def health_status(container) -> str:
    """starting, healthy or unhealthy; "" for a container without a health check."""
    if not container.config.get("Healthcheck"):
        return ""
    return (container.state.get("Health") or {}).get("Status", "starting")


def _unix(rfc3339: str | None) -> int:
    import calendar
    import time

    if not rfc3339 or rfc3339.startswith("0001"):
        return -62135596800
    try:
        return calendar.timegm(time.strptime(rfc3339[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return -62135596800


def ps_entry(container) -> dict:
    """podman's `ps --format json` keys."""
    from capsa.ctl.output import human_time

    state = container.state
    return {
        "AutoRemove": bool(container.config.get("AutoRemove")),
        "Command": container.command,
        "CreatedAt": human_time(container.created),
        "Exited": container.status == "exited",
        "ExitedAt": _unix(state.get("FinishedAt")),
        "ExitCode": container.exit_code,
        "Id": container.id,
        "Image": container.config.get("ImageName", ""),
        "ImageID": container.image_id or "",
        "IsInfra": bool(container.config.get("IsInfra")),
        "Labels": container.config.get("Labels") or None,
        "Mounts": [m["destination"] for m in container.config.get("Mounts") or []],
        "Names": [container.name],
        "Namespaces": {},
        "Networks": [],
        "Pid": container.pid,
        "Pod": container.config.get("Pod", ""),
        "PodName": "",
        "Ports": None,
        "Size": None,
        "StartedAt": _unix(state.get("StartedAt")),
        "State": container.status,
        "Status": status_text(container),
        "Created": _unix(container.created),
    }


def ps_template_entry(container) -> dict:
    """The fields of a ps Go template (podman's psReporter): strings as the table shows them."""
    from capsa.ctl.output import human_time

    entry = ps_entry(container)
    entry.update(ID=container.id[:12], Names=container.name, Command=" ".join(container.command),
                 CreatedHuman=human_time(container.created), RunningFor=human_time(container.created),
                 Labels=container.config.get("Labels") or {}, Ports=_ports_text(container),
                 Mounts=",".join(entry["Mounts"]))
    return entry


def _ports_text(container) -> str:
    ports = (container.state.get("network") or {}).get("ports")
    if not ports or container.status not in ("running", "paused", "stopping"):
        return ""
    from capsa.manager import network

    return network.ports_text(ports)


def _matches(container, filters: list[str]) -> bool:
    """podman's ps --filter: id, name, status, label, exited, ancestor; several filters of one
    key are ORed, different keys ANDed."""
    import fnmatch

    by_key: dict[str, list[str]] = {}
    for item in filters:
        key, eq, value = item.partition("=")
        if not eq:
            raise ManagerError(f"--filter {item!r}: give KEY=VALUE")
        by_key.setdefault(key, []).append(value)
    for key, values in by_key.items():
        if key == "id":
            ok = any(container.id.startswith(v) for v in values)
        elif key == "name":
            ok = any(v in container.name or fnmatch.fnmatch(container.name, v) for v in values)
        elif key == "status":
            ok = container.status in values or ("stopped" in values and container.status == "exited")
        elif key == "label":
            labels = container.config.get("Labels") or {}
            ok = all(_label_match(labels, v) for v in values)
        elif key == "exited":
            ok = container.status == "exited" and str(container.exit_code) in values
        elif key == "pod":  # ids: _pod_filters resolved the names
            ok = bool(container.config.get("Pod")) and any(container.config["Pod"].startswith(v) for v in values)
        elif key == "health":
            ok = (health_status(container) or "none") in values
        elif key == "restart-policy":
            from capsa.manager.restarts import policy_of

            ok = policy_of(container).name in values
        elif key == "ancestor":
            ok = any(v in (container.config.get("ImageName", ""), container.config.get("Image", ""))
                     or container.image_id.startswith(v) for v in values)
        else:
            raise ManagerError(f"--filter {key!r}: unsupported (id, name, status, label, exited, ancestor, health)")
        if not ok:
            return False
    return True


def _pod_filters(manager, filters: list[str]) -> list[str]:
    """--filter pod=NAME|ID with the pod's id (a container's config names its pod by id)."""
    if not any(item.startswith("pod=") for item in filters):
        return filters
    from capsa.manager.pods import Pods

    pods = Pods(manager)
    return [f"pod={pods.resolve_id(item[4:])}" if item.startswith("pod=") else item for item in filters]


def _label_match(labels: dict, wanted: str) -> bool:
    key, eq, value = wanted.partition("=")
    return key in labels and (not eq or labels[key] == value)


def ps(ctx, argv: list[str]) -> int:
    parser = _parser("ps", "List containers")
    parser.add_argument("-a", "--all", action="store_true", help="show all containers, not only running ones")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the container IDs")
    parser.add_argument("--no-trunc", action="store_true", help="do not truncate the output")
    parser.add_argument("-f", "--filter", action="append", default=[], help="filter: KEY=VALUE")
    parser.add_argument("--format", help="json, or a Go template such as {{.ID}} {{.Names}}")
    parser.add_argument("-n", "--last", type=int, default=-1, help="the N last created containers")
    parser.add_argument("-l", "--latest", action="store_true", help="the last created container")
    args = _parse(parser, argv)
    manager = _manager(ctx)
    args.filter = _pod_filters(manager, args.filter)
    containers = [c for c in manager.list()
                  if (args.all or args.filter or c.status in ("running", "paused", "stopping") or args.last > 0
                      or args.latest) and _matches(c, args.filter)]
    containers.reverse()  # newest first, as podman
    if args.latest:
        containers = containers[:1]
    elif args.last >= 0:
        containers = containers[:args.last]
    out = sys.stdout
    if args.quiet:
        out.write("".join(f"{c.id if args.no_trunc else c.id[:12]}\n" for c in containers))
        return 0
    from capsa.ctl import format as fmt

    if args.format and fmt.is_json(args.format):
        out.write(fmt.dump_json([ps_entry(c) for c in containers]))
        return 0
    if args.format:
        graph = manager.requires_graph()[0] if "Dependencies" in args.format else {}
        entries = [dict(ps_template_entry(c), Dependencies=",".join(graph.get(c.name, []))) for c in containers]
        out.write(fmt.render(args.format, entries, PS_HEADERS))
        return 0
    template = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.CreatedHuman}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
    entries = []
    for c in containers:
        entry = ps_template_entry(c)
        if args.no_trunc:
            entry["ID"] = c.id
        elif len(entry["Command"]) > 17:
            entry["Command"] = entry["Command"][:17] + "..."  # podman's psReporter.Command
        entries.append(entry)
    out.write(fmt.render(template, entries, PS_HEADERS))
    return 0


def inspect(ctx, argv: list[str], kind: str | None = None) -> int:
    parser = _parser("inspect", "Display the configuration of object denoted by ID")
    parser.add_argument("-f", "--format", help="json (default) or a Go template such as {{.State.Status}}")
    parser.add_argument("-s", "--size", action="store_true", help="show the container's size (ignored)")
    parser.add_argument("-l", "--latest", action="store_true", help="the last created container")
    parser.add_argument("-t", "--type", default=kind or "all", choices=["all", "container", "image", "volume"])
    parser.add_argument("names", nargs="*")
    args = _parse(parser, argv)
    from capsa.errors import CapsaError
    from capsa.manager.containers import inspect_data

    manager = _manager(ctx)
    names = list(args.names)
    if args.latest:
        latest = manager.list()
        if not latest:
            raise ManagerError("no containers to inspect")
        names.append(latest[-1].id)
    if not names:
        raise ManagerError("give at least one name or ID to inspect")
    documents = []
    code = 0
    for name in names:
        try:
            documents.append(_inspect_one(ctx, manager, name, args.type, inspect_data))
        except CapsaError as err:
            sys.stderr.write(f"Error: {err}\n")
            code = 125
    from capsa.ctl import format as fmt

    if args.format and not fmt.is_json(args.format):
        sys.stdout.write(fmt.render(args.format, documents))
    else:
        sys.stdout.write(fmt.dump_json(documents))
    return code


def _inspect_one(ctx, manager, name: str, kind: str, inspect_data) -> dict:
    from capsa.manager.errors import NoSuchContainer, NoSuchImage, NoSuchVolume

    if kind in ("all", "container"):
        try:
            return inspect_data(manager, manager.get(name))
        except NoSuchContainer:
            if kind == "container":
                raise
    if kind in ("all", "image"):
        try:
            image = ctx.images.resolve(name)
        except NoSuchImage:
            if kind == "image":
                raise
        else:
            return image_inspect_data(image)
    if kind in ("all", "volume"):
        try:
            volume = manager.volumes.get(name)
        except NoSuchVolume:
            if kind == "volume":
                raise
        else:
            return volume.inspect()
    raise ManagerError(f"no such object: {name!r}")


def image_inspect_data(image) -> dict:
    """The images part's `images.inspect_data(image)`, or the key fields if it is not there yet."""
    try:
        from capsa.manager.images import inspect_data
    except ImportError:
        inspect_data = None
    if inspect_data is not None:
        return inspect_data(image)
    config = image.config
    return {"Id": image.id, "Digest": image.digest or "", "RepoTags": image.names, "RepoDigests": [],
            "Created": config.get("created", image.created), "Config": config.get("config") or {},
            "Architecture": config.get("architecture", ""), "Os": config.get("os", ""), "Size": image.size,
            "RootFS": {"Type": "layers", "Layers": (config.get("rootfs") or {}).get("diff_ids", [])},
            "History": config.get("history") or [], "NamesHistory": image.names}


def container_inspect(ctx, argv: list[str]) -> int:
    return inspect(ctx, argv, kind="container")


def exists(ctx, argv: list[str]) -> int:
    parser = _parser("container exists", "Check if a container exists in local storage")
    parser.add_argument("name")
    args = _parse(parser, argv)
    return 0 if _manager(ctx).exists(args.name) else 1


# --- rename, pause, unpause, top, stats -------------------------------------------------------------------

def rename(ctx, argv: list[str]) -> int:
    parser = _parser("rename", "Rename an existing container")
    parser.add_argument("container")
    parser.add_argument("new_name")
    args = _parse(parser, argv)
    _manager(ctx).rename(args.container, args.new_name)
    return 0


def pause(ctx, argv: list[str]) -> int:
    return _freeze_command(ctx, argv, "pause")


def unpause(ctx, argv: list[str]) -> int:
    return _freeze_command(ctx, argv, "unpause")


def _freeze_command(ctx, argv: list[str], word: str) -> int:
    parser = _parser(word, f"{word.capitalize()} all the processes in one or more containers")
    parser.add_argument("-a", "--all", action="store_true")
    parser.add_argument("containers", nargs="*")
    args = _parse(parser, argv)
    manager = _manager(ctx)
    names = _names_or_all(manager, args, lambda c: c.status == ("running" if word == "pause" else "paused"))
    action = manager.pause if word == "pause" else manager.unpause
    return _each(names, lambda name: (action(name), print(manager.get(name).id)))


TOP_DEFAULT = ["user", "pid", "ppid", "pcpu", "etime", "tty", "time", "args"]
TOP_HEADERS = {"user": "USER", "pid": "PID", "ppid": "PPID", "pcpu": "%CPU", "etime": "ELAPSED", "tty": "TTY",
               "time": "TIME", "args": "COMMAND", "comm": "COMMAND", "group": "GROUP", "nice": "NI",
               "rss": "RSS", "vsz": "VSZ", "pgid": "PGID", "stat": "STAT", "huser": "HUSER", "hpid": "HPID"}
TOP_ALIASES = {"%cpu": "pcpu", "etime": "etime", "cmd": "args", "command": "args", "ni": "nice"}


def top(ctx, argv: list[str]) -> int:
    parser = _parser("top", "Display the running processes of a container")
    parser.add_argument("container")
    parser.add_argument("descriptors", nargs="*", help="ps(1) format descriptors (default: podman's)")
    args = _parse(parser, argv)
    manager = _manager(ctx)
    pids = manager.processes(args.container)
    descriptors = top_descriptors(args.descriptors)
    container = manager.get(args.container)
    from capsa.ctl import format as fmt

    rows = ["\t".join(TOP_HEADERS[d] for d in descriptors)]
    rows += top_rows(manager, container, pids, descriptors)
    sys.stdout.write(fmt.align("\n".join(rows) + "\n"))
    return 0


def top_descriptors(items: list[str]) -> list[str]:
    """ps(1) descriptors as `top` takes them (comma-separated or not, podman's aliases)."""
    descriptors = []
    for item in items or TOP_DEFAULT:
        for word in item.split(","):
            word = TOP_ALIASES.get(word.lower(), word.lower())
            if word not in TOP_HEADERS:
                raise ManagerError(f"top: unknown descriptor {word!r} ({', '.join(sorted(TOP_HEADERS))})")
            descriptors.append(word)
    return descriptors


def top_rows(manager, container, pids: list[int], descriptors: list[str]) -> list[str]:
    """One tab-separated row per process of `container`: pid and ppid as the container sees them
    (its pid namespace), as podman's top shows them; user names from its own /etc/passwd."""
    names = _passwd_names(manager.storage.merged(container.id))
    infos = [info for info in (_process_info(pid, names) for pid in pids) if info is not None]
    in_namespace = {info["hpid"]: info["nspid"] for info in infos}
    rows = []
    for info in infos:
        info["pid"] = info["nspid"]
        info["ppid"] = in_namespace.get(info["hppid"], 0)
        rows.append("\t".join(str(info.get(d, "")) for d in descriptors))
    return rows


def _passwd_names(rootfs: str) -> dict[int, str]:
    from capsa.manager.ocispec import _read_in_root

    names = {}
    for line in _read_in_root(rootfs, "/etc/passwd").splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[2].isdigit():
            names.setdefault(int(fields[2]), fields[0])
    return names


def _process_info(pid: int, names: dict[int, str]) -> dict | None:
    """podman top's columns from /proc (the container's view of its users; host pids)."""
    import os

    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return None
    comm = stat[stat.index("(") + 1:stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    started = int(fields[19]) / ticks
    elapsed = max(uptime - started, 0.0)
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    uid = int(status["Uid"].split()[1])
    gid = int(status["Gid"].split()[1])
    tty = int(fields[4])
    nspid = int(status.get("NSpid", str(pid)).split()[-1])
    return {"user": names.get(uid, str(uid)), "nspid": nspid, "hppid": int(fields[1]),
            "pcpu": f"{100 * cpu / elapsed:.3f}" if elapsed > 0 else "0.000",
            "etime": _elapsed(elapsed), "tty": "?" if tty == 0 else f"pts/{tty & 0xff}",
            "time": _cpu_time(cpu), "args": cmdline or f"[{comm}]", "comm": comm, "group": str(gid),
            "nice": int(fields[16]), "rss": int(fields[21]) * os.sysconf("SC_PAGE_SIZE") // 1024,
            "vsz": int(fields[20]) // 1024, "pgid": int(fields[2]), "stat": fields[0], "huser": str(uid),
            "hpid": pid}


def _elapsed(seconds: float) -> str:
    """Go's time.Duration as podman top prints it: 1m2.5s, 3.2s, 1h0m5s."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{int(hours)}h{int(minutes)}m{secs:.0f}s"
    if minutes:
        return f"{int(minutes)}m{secs:.0f}s"
    return f"{secs:.3f}".rstrip("0").rstrip(".") + "s"


def _cpu_time(seconds: float) -> str:
    return f"{int(seconds)}s"


STATS_TEMPLATE = ("table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t"
                  "{{.BlockIO}}\t{{.PIDs}}\t{{.CPU}}\t{{.AVGCPU}}")
STATS_HEADERS = {"ID": "ID", "Name": "NAME", "CPUPerc": "CPU %", "MemUsage": "MEM USAGE / LIMIT",
                 "MemPerc": "MEM %", "NetIO": "NET IO", "BlockIO": "BLOCK IO", "PIDs": "PIDS", "CPU": "CPU TIME",
                 "AVGCPU": "AVG CPU %"}


def stats(ctx, argv: list[str]) -> int:
    parser = _parser("stats", "Display a live stream of container resource usage statistics")
    parser.add_argument("--no-stream", action="store_true", help="print one sample and exit")
    parser.add_argument("-a", "--all", action="store_true", help="all containers (default: running ones)")
    parser.add_argument("--format", help="json or a Go template")
    parser.add_argument("--no-reset", action="store_true", help="do not clear the terminal between samples")
    parser.add_argument("-i", "--interval", type=int, default=5, help="seconds between samples (default 5)")
    parser.add_argument("containers", nargs="*")
    args = _parse(parser, argv)
    if args.interval < 1:
        raise ManagerError(f"--interval {args.interval}: give at least 1 second")
    manager = _manager(ctx)
    running = ("running", "paused", "stopping")
    if args.containers:
        for container in [manager.get(name) for name in args.containers]:
            if container.status not in running:
                raise ManagerError(f"container {container.name} is not running: no statistics")
    previous: dict[str, tuple[int, float]] = {}
    from capsa.ctl import format as fmt

    while True:
        if args.containers:
            containers = [c for c in (manager.get(name) for name in args.containers) if c.status in running]
        else:
            containers = [c for c in manager.list() if c.status in running]
        if args.containers and not containers:
            return 0  # the containers named have all stopped
        entries = []
        for container in containers:
            try:
                entries.append(_stats_entry(manager, container, previous.get(container.id)))
            except ManagerError:
                continue  # it exited while we looked
            previous[container.id] = (entries[-1]["CPUNano"], entries[-1]["SampledAt"])
        if not args.no_stream and not args.no_reset and sys.stdout.isatty():
            sys.stdout.write("\033[2J\033[H")  # podman's: the table in place
        if args.format and fmt.is_json(args.format):
            sys.stdout.write(fmt.dump_json(entries))
        else:
            sys.stdout.write(fmt.render(args.format or STATS_TEMPLATE, entries, STATS_HEADERS))
        sys.stdout.flush()
        if args.no_stream:
            return 0
        import time

        time.sleep(args.interval)


def _stats_entry(manager, container, previous: tuple[int, float] | None = None) -> dict:
    """podman's stats fields from the cgroup's figures (runc's events --stats shape). CPU %: over
    the time since `previous` (cpu ns, time) when streaming, else since the container started."""
    import time

    from capsa.ctl.output import human_size

    try:
        data = manager.stats(container)
    except Exception as err:  # noqa: BLE001 - the container went away while we looked
        raise ManagerError(f"cannot read the statistics of {container.name}: {err}") from None
    cpu_ns = ((data.get("cpu") or {}).get("usage") or {}).get("total", 0)
    memory = data.get("memory") or {}
    usage = (memory.get("usage") or {}).get("usage", 0)
    limit = (memory.get("usage") or {}).get("limit", 0)
    try:
        with open("/proc/meminfo") as f:
            total = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        total = 0
    if not limit or limit > total > 0:
        limit = total
    blkio = data.get("blkio") or {}
    read = sum(e.get("value", 0) for e in blkio.get("ioServiceBytesRecursive") or [] if e.get("op", "").lower() == "read")
    write = sum(e.get("value", 0) for e in blkio.get("ioServiceBytesRecursive") or []
                if e.get("op", "").lower() == "write")
    pids = (data.get("pids") or {}).get("current", 0)
    now = time.time()
    started = _unix(container.state.get("StartedAt"))
    uptime = max(now - started, 1e-9)
    average = 100 * cpu_ns / 1e9 / uptime
    current = average
    if previous is not None and now > previous[1]:
        current = 100 * max(cpu_ns - previous[0], 0) / 1e9 / (now - previous[1])
    net_rx = sum(i.get("rx_bytes", 0) for i in data.get("network_interfaces") or [])
    net_tx = sum(i.get("tx_bytes", 0) for i in data.get("network_interfaces") or [])
    return {"ID": container.id[:12], "ContainerID": container.id, "Name": container.name,
            "CPUPerc": f"{current:.2f}%", "CPU": f"{cpu_ns / 1e9:.6g}s", "CPUNano": cpu_ns, "SampledAt": now,
            "AVGCPU": f"{average:.2f}%", "MemUsage": f"{human_size(usage)} / {human_size(limit)}",
            "MemPerc": f"{100 * usage / limit:.2f}%" if limit else "0.00%", "MemUsageBytes": usage,
            "MemLimit": limit, "NetIO": f"{human_size(net_rx)} / {human_size(net_tx)}",
            "BlockIO": f"{human_size(read)} / {human_size(write)}", "PIDs": pids}


# --- cp, export, mount, unmount ----------------------------------------------------------------------------

def cp(ctx, argv: list[str]) -> int:
    parser = _parser("cp", "Copy files/folders between a container and the local filesystem")
    parser.add_argument("-a", "--archive", action="store_true", default=True, help="keep ownership (default)")
    parser.add_argument("source")
    parser.add_argument("destination")
    args = _parse(parser, argv)
    source, destination = _cp_side(args.source), _cp_side(args.destination)
    if (source[0] is None) == (destination[0] is None):
        raise ManagerError("cp: exactly one of the source and the destination must be CONTAINER:PATH")
    manager = _manager(ctx)
    from capsa.manager import copy

    if destination == (None, "-"):  # a tar stream of the container's path on stdout
        if sys.stdout.isatty():
            raise ManagerError("cp: refusing to write a tar archive to a terminal")
        with manager.mounted_rootfs(source[0]) as (_, rootfs):
            copy.tar_out(rootfs, source[1], sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return 0
    if source == (None, "-"):  # a tar stream on stdin, unpacked into the container's directory
        with manager.mounted_rootfs(destination[0]) as (_, rootfs):
            copy.tar_in(sys.stdin.buffer, rootfs, destination[1])
        return 0
    if source[0] is not None:
        with manager.mounted_rootfs(source[0]) as (_, rootfs):
            copy.copy_out(rootfs, source[1], destination[1])
    else:
        with manager.mounted_rootfs(destination[0]) as (_, rootfs):
            copy.copy_in(source[1], rootfs, destination[1])
    return 0


def _cp_side(text: str) -> tuple[str | None, str]:
    if text.startswith("/") or text.startswith(".") or ":" not in text:
        return None, text
    name, _, path = text.partition(":")
    return name, path or "/"


def export(ctx, argv: list[str]) -> int:
    parser = _parser("export", "Export container's filesystem contents as a tar archive")
    parser.add_argument("-o", "--output", help="write to a file (default: stdout)")
    parser.add_argument("container")
    args = _parse(parser, argv)
    if args.output is None and sys.stdout.isatty():
        raise ManagerError("refusing to export to a terminal: use -o FILE or redirect stdout")
    manager = _manager(ctx)
    from capsa.manager import copy

    with manager.mounted_rootfs(args.container) as (_, rootfs):
        if args.output:
            with open(args.output, "wb") as f:
                copy.export_tar(rootfs, f)
        else:
            copy.export_tar(rootfs, sys.stdout.buffer)
            sys.stdout.buffer.flush()
    return 0


def mount(ctx, argv: list[str]) -> int:
    parser = _parser("mount", "Mount a working container's root filesystem")
    parser.add_argument("--notruncate", action="store_true")
    parser.add_argument("containers", nargs="*")
    args = _parse(parser, argv)
    manager = _manager(ctx)
    if not args.containers:
        for container in manager.list():
            if container.state.get("UserMounts"):
                print(f"{container.id if args.notruncate else container.id[:12]}  "
                      f"{manager.storage.merged(container.id)}")
        return 0
    return _each(args.containers, lambda name: print(manager.mount(name)))


def unmount(ctx, argv: list[str]) -> int:
    parser = _parser("unmount", "Unmount working container's root filesystem")
    parser.add_argument("-f", "--force", action="store_true", help="unmount however many times it was mounted")
    parser.add_argument("-a", "--all", action="store_true")
    parser.add_argument("containers", nargs="*")
    args = _parse(parser, argv)
    manager = _manager(ctx)
    names = _names_or_all(manager, args, lambda c: bool(c.state.get("UserMounts")))
    return _each(names, lambda name: (manager.unmount(name, args.force), print(manager.get(name).id)))


# --- prune, cleanup, exec ------------------------------------------------------------------------------------

def prune(ctx, argv: list[str]) -> int:
    parser = _parser("container prune", "Remove all non running containers")
    parser.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    args = _parse(parser, argv)
    if not args.force and sys.stdin.isatty():
        sys.stdout.write("WARNING! This will remove all non running containers.\nAre you sure you want to "
                         "continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    for container_id, _ in _manager(ctx).prune():
        print(container_id)
    return 0


def cleanup(ctx, argv: list[str]) -> int:
    """podman's `container cleanup`: finish what a container's exit left (the monitor does it;
    this is for a container whose monitor was killed)."""
    parser = _parser("container cleanup", "Clean up network and mountpoints of one or more containers")
    parser.add_argument("-a", "--all", action="store_true")
    parser.add_argument("containers", nargs="*")
    args = _parse(parser, argv)
    manager = _manager(ctx)
    names = _names_or_all(manager, args, lambda c: True)
    return _each(names, lambda name: print(manager.get(name).id))  # get() syncs: that is the clean-up
