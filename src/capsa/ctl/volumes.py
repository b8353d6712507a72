"""capsactl volume create|ls|inspect|rm|prune|exists (podman's, the local driver)."""

from __future__ import annotations

import sys

from capsa.ctl.containers import _each, _parse, _parser
from capsa.manager.errors import ManagerError


def _volumes(ctx):
    from capsa.manager.volumes import Volumes

    return Volumes(ctx.store)


def create(ctx, argv: list[str]) -> int:
    parser = _parser("volume create", "Create a new volume")
    parser.add_argument("-d", "--driver", default="local", help="volume driver (local only)")
    parser.add_argument("-l", "--label", action="append", default=[], help="set a label KEY=VALUE")
    parser.add_argument("-o", "--opt", action="append", default=[], help="driver option KEY=VALUE")
    parser.add_argument("name", nargs="?")
    args = _parse(parser, argv)
    if args.driver != "local":
        raise ManagerError(f"volume driver {args.driver!r} is not supported: only local")
    from capsa.manager import events
    from capsa.manager.ocispec import parse_labels

    options = parse_labels(args.opt, "--opt")
    volume = _volumes(ctx).create(args.name, labels=parse_labels(args.label), options=options)
    events.emit(ctx.paths, "create", "volume", name=volume.name)
    print(volume.name)
    return 0


def ls(ctx, argv: list[str]) -> int:
    parser = _parser("volume ls", "List volumes")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the volume names")
    parser.add_argument("--format", help="json or a Go template such as {{.Name}}")
    parser.add_argument("-f", "--filter", action="append", default=[], help="name=, label=, dangling=true|false")
    args = _parse(parser, argv)
    manager = _volumes(ctx)
    users = manager.users()
    volumes = [v for v in manager.list() if _matches(v, users, args.filter)]
    if args.quiet:
        sys.stdout.write("".join(f"{v.name}\n" for v in volumes))
        return 0
    from capsa.ctl import format as fmt

    documents = [v.inspect(len(users.get(v.name, []))) for v in volumes]
    if args.format and fmt.is_json(args.format):
        sys.stdout.write(fmt.dump_json(documents))
    else:
        sys.stdout.write(fmt.render(args.format or "table {{.Driver}}\t{{.Name}}", documents,
                                    {"Driver": "DRIVER", "Name": "VOLUME NAME"}))
    return 0


def _matches(volume, users: dict, filters: list[str]) -> bool:
    for item in filters:
        key, eq, value = item.partition("=")
        if not eq:
            raise ManagerError(f"--filter {item!r}: give KEY=VALUE")
        if key == "name":
            ok = value in volume.name
        elif key == "label":
            label, has_value, wanted = value.partition("=")
            labels = volume.config.get("Labels") or {}
            ok = label in labels and (not has_value or labels[label] == wanted)
        elif key == "dangling":
            ok = (volume.name not in users) == (value.lower() in ("true", "1"))
        elif key == "driver":
            ok = value == "local"
        else:
            raise ManagerError(f"--filter {key!r}: unsupported (name, label, dangling, driver)")
        if not ok:
            return False
    return True


def inspect(ctx, argv: list[str]) -> int:
    parser = _parser("volume inspect", "Display detailed information on one or more volumes")
    parser.add_argument("-f", "--format", help="json (default) or a Go template")
    parser.add_argument("-a", "--all", action="store_true")
    parser.add_argument("names", nargs="*")
    args = _parse(parser, argv)
    manager = _volumes(ctx)
    users = manager.users()
    names = [v.name for v in manager.list()] if args.all else args.names
    if not names:
        raise ManagerError("give at least one volume name (or --all)")
    documents = []

    def one(name):
        documents.append(manager.get(name).inspect(len(users.get(name, []))))

    code = _each(names, one)
    from capsa.ctl import format as fmt

    if args.format and not fmt.is_json(args.format):
        sys.stdout.write(fmt.render(args.format, documents))
    else:
        sys.stdout.write(fmt.dump_json(documents))
    return code


def rm(ctx, argv: list[str]) -> int:
    parser = _parser("volume rm", "Remove one or more volumes")
    parser.add_argument("-f", "--force", action="store_true", help="also remove the containers using it")
    parser.add_argument("-a", "--all", action="store_true")
    parser.add_argument("names", nargs="*")
    args = _parse(parser, argv)
    manager = _volumes(ctx)
    names = [v.name for v in manager.list()] if args.all else args.names
    if not names:
        raise ManagerError("give at least one volume name (or --all)")
    from capsa.manager import events
    from capsa.manager.containers import Containers

    containers = Containers(ctx.store)

    def one(name):
        manager.remove(name, force=args.force,
                       remove_container=lambda c: containers.remove(c, force=True, timeout=0))
        events.emit(ctx.paths, "remove", "volume", name=name)
        print(name)

    return _each(names, one)


def prune(ctx, argv: list[str]) -> int:
    parser = _parser("volume prune", "Remove all unused volumes")
    parser.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--filter", action="append", default=[], help="label=KEY[=VALUE]")
    args = _parse(parser, argv)
    if not args.force and sys.stdin.isatty():
        sys.stdout.write("WARNING! This will remove all volumes not used by at least one container.\n"
                         "Are you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    filters: dict = {}
    for item in args.filter:
        key, _, value = item.partition("=")
        if key != "label":
            raise ManagerError(f"--filter {key!r}: unsupported (label)")
        filters.setdefault("label", []).append(value)
    for name, _ in _volumes(ctx).prune(filters):
        print(name)
    return 0


def exists(ctx, argv: list[str]) -> int:
    parser = _parser("volume exists", "Check if volume exists")
    parser.add_argument("name")
    args = _parse(parser, argv)
    from capsa.manager.errors import NoSuchVolume

    try:
        _volumes(ctx).get(args.name)
    except NoSuchVolume:
        return 1
    return 0
