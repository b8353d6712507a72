"""capsactl's pod commands (podman's `pod ...`): create, start, stop, kill, pause, unpause,
restart, rm, ps, inspect, top, logs, exists, prune, over capsa.manager.pods."""

from __future__ import annotations

import sys

from capsa.ctl.containers import _each, _manager, _parse, _parser
from capsa.manager.errors import ManagerError


def _pods(ctx):
    from capsa.manager.pods import Pods

    return Pods(_manager(ctx))


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise ManagerError(f"--infra {text!r}: give true or false")


def create(ctx, argv: list[str]) -> int:
    parser = _parser("pod create", "Create a new empty pod")
    parser.add_argument("--name", help="the pod's name")
    parser.add_argument("--infra", default="true", help="create an infra container holding the pod's namespaces "
                        "(default true)")
    parser.add_argument("-p", "--publish", action="append", default=[], dest="ports",
                        help="publish a port of the pod: [ip:][hostPort:]containerPort[/tcp|udp]")
    parser.add_argument("--network", "--net", help="the pod's network: bridge, a network's name, none (default), host")
    parser.add_argument("--share", help="namespaces the members share: net,ipc,uts always; pid optional "
                        "(default cgroup,ipc,net,uts)")
    parser.add_argument("--hostname", help="the pod's host name (default: its name)")
    parser.add_argument("-l", "--label", action="append", default=[], dest="labels", help="set a label KEY=VALUE")
    parser.add_argument("name_arg", nargs="?", metavar="NAME")
    args = _parse(parser, argv)
    if args.name and args.name_arg:
        raise ManagerError("give the pod's name once: --name or an argument")
    if args.network == "host" and args.ports:
        raise ManagerError("-p/--publish needs a bridge network: --network host has none to publish on")
    pod = _pods(ctx).create({
        "name": args.name or args.name_arg, "infra": _boolean(args.infra), "ports": args.ports,
        "network": args.network, "share": args.share, "hostname": args.hostname, "labels": args.labels,
        "runtime": ctx.runtime, "hooks_dirs": [ctx.options["--hooks-dir"]] if ctx.options.get("--hooks-dir") else None,
        "create_command": ["capsactl", "pod", "create", *argv]})
    print(pod.id)
    return 0


def _names_or_all(pods, args) -> list[str]:
    if getattr(args, "all", False):
        if args.pods:
            raise ManagerError("--all and pod names cannot be given together")
        return [p.id for p in pods.list()]
    if not args.pods:
        raise ManagerError("give at least one pod name or ID (or --all)")
    return args.pods


def _simple(ctx, argv: list[str], verb: str, description: str, action, with_time: bool = False,
            with_signal: bool = False) -> int:
    parser = _parser(f"pod {verb}", description)
    parser.add_argument("-a", "--all", action="store_true", help=f"{verb} all pods")
    if with_time:
        parser.add_argument("-t", "--time", type=int, help="seconds to wait before killing a container")
    if with_signal:
        parser.add_argument("-s", "--signal", default="KILL", help="signal to send (default SIGKILL)")
    parser.add_argument("pods", nargs="*")
    args = _parse(parser, argv)
    pods = _pods(ctx)
    extra = {}
    if with_signal:
        from capsa.manager.ocispec import parse_signal

        extra["signal"] = parse_signal(args.signal, "--signal")
    if with_time:
        extra["timeout"] = args.time
    return _each(_names_or_all(pods, args), lambda name: print(action(pods)(name, **extra).id))


def start(ctx, argv: list[str]) -> int:
    return _simple(ctx, argv, "start", "Start one or more pods", lambda pods: pods.start)


def stop(ctx, argv: list[str]) -> int:
    return _simple(ctx, argv, "stop", "Stop one or more pods", lambda pods: pods.stop, with_time=True)


def restart(ctx, argv: list[str]) -> int:
    return _simple(ctx, argv, "restart", "Restart one or more pods", lambda pods: pods.restart, with_time=True)


def kill(ctx, argv: list[str]) -> int:
    return _simple(ctx, argv, "kill", "Send a signal to every container of one or more pods",
                   lambda pods: pods.kill, with_signal=True)


def pause(ctx, argv: list[str]) -> int:
    return _simple(ctx, argv, "pause", "Pause one or more pods", lambda pods: pods.pause)


def unpause(ctx, argv: list[str]) -> int:
    return _simple(ctx, argv, "unpause", "Unpause one or more pods", lambda pods: pods.unpause)


def rm(ctx, argv: list[str]) -> int:
    parser = _parser("pod rm", "Remove one or more stopped pods and their containers")
    parser.add_argument("-f", "--force", action="store_true", help="stop and remove the pod's containers first")
    parser.add_argument("-a", "--all", action="store_true", help="remove all pods")
    parser.add_argument("-i", "--ignore", action="store_true", help="ignore pods that do not exist")
    parser.add_argument("-t", "--time", type=int, help="seconds to wait for stop before killing (with -f)")
    parser.add_argument("pods", nargs="*")
    args = _parse(parser, argv)
    from capsa.manager.pods import NoSuchPod

    pods = _pods(ctx)

    def remove(name: str) -> None:
        try:
            print(pods.remove(name, force=args.force, timeout=args.time))
        except NoSuchPod:
            if not args.ignore:
                raise

    return _each(_names_or_all(pods, args), remove)


def exists(ctx, argv: list[str]) -> int:
    parser = _parser("pod exists", "Check if a pod exists in local storage")
    parser.add_argument("pod")
    args = _parse(parser, argv)
    return 0 if _pods(ctx).exists(args.pod) else 1


def prune(ctx, argv: list[str]) -> int:
    parser = _parser("pod prune", "Remove all stopped pods and their containers")
    parser.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    args = _parse(parser, argv)
    if not args.force:
        sys.stderr.write("WARNING! This will remove all stopped/exited pods..\nAre you sure you want to continue? [y/N] ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    for pod_id in _pods(ctx).prune():
        print(pod_id)
    return 0


PS_HEADERS = {"ID": "POD ID", "Name": "NAME", "Status": "STATUS", "Created": "CREATED", "InfraID": "INFRA ID",
              "NumberOfContainers": "# OF CONTAINERS", "Labels": "LABELS", "Networks": "NETWORKS"}


def ps_entry(pods, pod) -> dict:
    """podman's `pod ps --format json` keys."""
    from capsa.ctl.output import human_time
    from capsa.manager.pods import pod_status

    containers = pods.containers_of(pod)
    return {"Id": pod.id, "Name": pod.name, "Status": pod_status([c.status for c in containers]),
            "Created": pod.created, "CreatedHuman": human_time(pod.created), "InfraId": pod.infra_id,
            "Labels": pod.config.get("Labels") or {}, "Networks": [pod.config["Network"]] if pod.config.get("Network") else [],
            "Containers": [{"Id": c.id, "Names": c.name, "Status": c.status} for c in containers]}


def ps(ctx, argv: list[str]) -> int:
    parser = _parser("pod ps", "List pods")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the pod IDs")
    parser.add_argument("--no-trunc", action="store_true", help="do not truncate the IDs")
    parser.add_argument("-f", "--filter", action="append", default=[], help="filter: name=, id=, status=, label=")
    parser.add_argument("--format", help="json, or a Go template such as {{.Name}}")
    args = _parse(parser, argv)
    pods = _pods(ctx)
    entries = [ps_entry(pods, p) for p in pods.list()]
    entries = [e for e in entries if _matches(e, args.filter)]
    entries.reverse()  # newest first, as podman
    out = sys.stdout
    if args.quiet:
        out.write("".join(f"{e['Id'] if args.no_trunc else e['Id'][:12]}\n" for e in entries))
        return 0
    from capsa.ctl import format as fmt

    if args.format and fmt.is_json(args.format):
        out.write(fmt.dump_json(entries))
        return 0
    rows = []
    for e in entries:
        rows.append(dict(e, ID=e["Id"] if args.no_trunc else e["Id"][:12], Created=e["CreatedHuman"],
                         InfraID=e["InfraId"] if args.no_trunc else e["InfraId"][:12],
                         NumberOfContainers=len(e["Containers"])))
    template = args.format or "table {{.ID}}\t{{.Name}}\t{{.Status}}\t{{.Created}}\t{{.InfraID}}\t{{.NumberOfContainers}}"
    out.write(fmt.render(template, rows, PS_HEADERS))
    return 0


def _matches(entry: dict, filters: list[str]) -> bool:
    by_key: dict[str, list[str]] = {}
    for item in filters:
        key, eq, value = item.partition("=")
        if not eq:
            raise ManagerError(f"--filter {item!r}: give KEY=VALUE")
        by_key.setdefault(key, []).append(value)
    for key, values in by_key.items():
        if key == "name":
            ok = any(v in entry["Name"] for v in values)
        elif key == "id":
            ok = any(entry["Id"].startswith(v) for v in values)
        elif key == "status":
            ok = entry["Status"].lower() in [v.lower() for v in values]
        elif key == "label":
            ok = all(k in entry["Labels"] and (not eq or entry["Labels"][k] == v)
                     for k, eq, v in (w.partition("=") for w in values))
        else:
            raise ManagerError(f"--filter {key!r}: unsupported (name, id, status, label)")
        if not ok:
            return False
    return True


def inspect(ctx, argv: list[str]) -> int:
    parser = _parser("pod inspect", "Display the configuration of one or more pods")
    parser.add_argument("-f", "--format", help="json (default) or a Go template such as {{.State}}")
    parser.add_argument("pods", nargs="+")
    args = _parse(parser, argv)
    from capsa.errors import CapsaError

    pods = _pods(ctx)
    documents, code = [], 0
    for name in args.pods:
        try:
            documents.append(pods.inspect_data(pods.get(name)))
        except CapsaError as err:
            sys.stderr.write(f"Error: {err}\n")
            code = 125
    from capsa.ctl import format as fmt

    if not documents:
        return code
    if args.format and not fmt.is_json(args.format):
        sys.stdout.write(fmt.render(args.format, documents))
    elif len(documents) == 1 and len(args.pods) == 1:
        sys.stdout.write(fmt.dump_json(documents[0]))  # podman 4: one pod, one object
    else:
        sys.stdout.write(fmt.dump_json(documents))
    return code


def top(ctx, argv: list[str]) -> int:
    """The processes of every running container of the pod, as `top` shows one container's."""
    from capsa.ctl import containers as ctl_containers

    parser = _parser("pod top", "Display the running processes of the containers in a pod")
    parser.add_argument("pod")
    parser.add_argument("descriptors", nargs="*", help="ps(1) format descriptors (default: podman's)")
    args = _parse(parser, argv)
    pods = _pods(ctx)
    pod = pods.get(args.pod)
    manager = pods.containers
    descriptors = ctl_containers.top_descriptors(args.descriptors)
    running = [c for c in pods.containers_of(pod) if c.status in ("running", "paused", "stopping")]
    if not running:
        raise ManagerError(f"pod {pod.name} has no running container: top needs one")
    rows = ["\t".join(ctl_containers.TOP_HEADERS[d] for d in descriptors)]
    for container in running:
        rows += ctl_containers.top_rows(manager, container, manager.processes(container.id), descriptors)
    from capsa.ctl import format as fmt

    sys.stdout.write(fmt.align("\n".join(rows) + "\n"))
    return 0


def logs(ctx, argv: list[str]) -> int:
    """The logs of the pod's containers (not the infra's), each line prefixed as `logs` does for
    several containers; the flags are logs'."""
    from capsa.ctl.logs import logs as container_logs

    if not argv or argv[-1].startswith("-"):
        raise ManagerError("pod logs needs a pod name or ID (last)")
    pods = _pods(ctx)
    pod = pods.get(argv[-1])
    members = pods.members(pod)
    if not members:
        raise ManagerError(f"pod {pod.name} has no containers")
    return container_logs(ctx, [*argv[:-1], *(c.id for c in members)])
