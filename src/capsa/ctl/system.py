"""capsactl info, version, system df, system prune, system migrate (a refresh of the store's
run-time state, as after a reboot)."""

from __future__ import annotations

import os
import sys

from capsa.ctl.containers import _parse, _parser


def _yaml(value, indent: int = 0) -> str:
    """podman's info is YAML: maps of maps, lists of scalars, scalars."""
    pad = "  " * indent
    lines = []
    for key, item in value.items():
        if isinstance(item, dict):
            lines.append(f"{pad}{key}:" + (" {}" if not item else ""))
            if item:
                lines.append(_yaml(item, indent + 1).rstrip("\n"))
        elif isinstance(item, list):
            lines.append(f"{pad}{key}:" + (" []" if not item else ""))
            lines += [f"{pad}- {v}" for v in item]
        else:
            text = "" if item is None else str(item).lower() if isinstance(item, bool) else str(item)
            lines.append(f"{pad}{key}: {text}")
    return "\n".join(lines) + "\n"


def _runtime_info(ctx) -> dict:
    if ctx.runtime is None:
        import capsa

        return {"name": "capsa", "package": "capsa (in process: capsa's library)", "path": capsa.__file__,
                "version": f"capsa version {capsa.__version__}"}
    from capsa.manager.runtime import CliRuntime

    runtime = CliRuntime(ctx.runtime, "")
    import subprocess

    result = subprocess.run([runtime.path, "--version"], capture_output=True, text=True)
    return {"name": runtime.name, "path": runtime.path, "version": (result.stdout or "").strip().splitlines()[0]
            if result.stdout else ""}


def info_data(ctx) -> dict:
    import platform

    from capsa import __version__
    from capsa.manager.containers import ACTIVE, PAUSED, Containers
    from capsa.manager.images import go_arch

    containers = Containers(ctx.store).list()
    statuses = [c.status for c in containers]
    cgroup2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    from capsa.manager.layers import driver_name

    driver = driver_name(ctx.paths)
    return {
        "host": {
            "arch": go_arch(), "os": "linux", "kernel": platform.release(), "hostname": platform.node(),
            "cgroupVersion": "v2" if cgroup2 else "v1", "cgroupManager": "cgroupfs",
            "ociRuntime": _runtime_info(ctx), "conmon": {"package": "capsa (own monitor: capsa.manager.monitor)"},
            "cpus": os.cpu_count(), "security": {"rootless": os.geteuid() != 0, "seccompEnabled": True,
                                                 "seccompProfilePath": "/usr/share/containers/seccomp.json"},
        },
        "store": {
            "graphRoot": ctx.paths.graph_root, "runRoot": ctx.paths.run_root, "stateRoot": ctx.paths.state_root,
            "graphDriverName": driver,
            "graphStatus": {"overlayfs": "used" if driver == "overlay" else "not available here: layers are copied (vfs)"},
            "containerStore": {"number": len(containers), "running": sum(s in ACTIVE and s != PAUSED for s in statuses),
                               "paused": statuses.count(PAUSED),
                               "stopped": sum(s not in ACTIVE for s in statuses)},
            "imageStore": {"number": len(ctx.images.list())},
            "volumePath": ctx.paths.volumes,
        },
        "version": {"Version": __version__, "PythonVersion": platform.python_version(), "OsArch": f"linux/{go_arch()}"},
    }


def info(ctx, argv: list[str]) -> int:
    parser = _parser("info", "Display capsactl system information")
    parser.add_argument("-f", "--format", help="json or a Go template such as {{.Store.GraphRoot}}")
    args = _parse(parser, argv)
    data = info_data(ctx)
    from capsa.ctl import format as fmt

    if args.format and fmt.is_json(args.format):
        sys.stdout.write(fmt.dump_json(data))
    elif args.format:
        sys.stdout.write(fmt.render(args.format, [data]))
    else:
        sys.stdout.write(_yaml(data))
    return 0


def version(ctx, argv: list[str]) -> int:
    parser = _parser("version", "Display the capsactl version information")
    parser.add_argument("-f", "--format", help="json or a Go template such as {{.Client.Version}}")
    args = _parse(parser, argv)
    import platform

    from capsa import __version__
    from capsa.manager.images import go_arch

    client = {"APIVersion": __version__, "Version": __version__, "PythonVersion": platform.python_version(),
              "Built": 0, "BuiltTime": "", "OsArch": f"linux/{go_arch()}", "Os": "linux"}
    from capsa.ctl import format as fmt

    if args.format and fmt.is_json(args.format):
        sys.stdout.write(fmt.dump_json({"Client": client}))
    elif args.format:
        sys.stdout.write(fmt.render(args.format, [{"Client": client}]))
    else:
        sys.stdout.write(fmt.align(f"Client:\tcapsactl\nVersion:\t{client['Version']}\n"
                                   f"Python Version:\t{client['PythonVersion']}\nOS/Arch:\t{client['OsArch']}\n",
                                   padding=2, minwidth=0))
    return 0


def df_data(ctx) -> list[dict]:
    from capsa.manager.containers import ACTIVE, Containers
    from capsa.manager.volumes import Volumes, du

    containers = Containers(ctx.store).list()
    images = ctx.images.list()
    used_images = {c.image_id for c in containers}
    image_size = sum(i.size for i in images)
    image_reclaim = sum(i.size for i in images if i.id not in used_images)
    sizes = {c.id: du(os.path.join(ctx.paths.container(c.id), "upper")) for c in containers}
    running = [c for c in containers if c.status in ACTIVE]
    volumes = Volumes(ctx.store)
    users = volumes.users()
    volume_sizes = {v.name: du(v.mountpoint) for v in volumes.list()}
    return [
        {"Type": "Images", "Total": len(images), "Active": len({i.id for i in images} & used_images),
         "RawSize": image_size, "RawReclaimable": image_reclaim},
        {"Type": "Containers", "Total": len(containers), "Active": len(running), "RawSize": sum(sizes.values()),
         "RawReclaimable": sum(sizes[c.id] for c in containers if c.status not in ACTIVE)},
        {"Type": "Local Volumes", "Total": len(volume_sizes), "Active": sum(1 for v in volume_sizes if v in users),
         "RawSize": sum(volume_sizes.values()),
         "RawReclaimable": sum(s for v, s in volume_sizes.items() if v not in users)},
    ]


def df(ctx, argv: list[str]) -> int:
    parser = _parser("system df", "Show capsactl disk usage")
    parser.add_argument("--format", help="json or a Go template")
    parser.add_argument("-v", "--verbose", action="store_true", help="(not yet: the summary is shown)")
    args = _parse(parser, argv)
    from capsa.ctl import format as fmt
    from capsa.ctl.output import human_size

    rows = df_data(ctx)
    for row in rows:
        percent = 100 * row["RawReclaimable"] // row["RawSize"] if row["RawSize"] else 0
        row.update(Size=human_size(row["RawSize"]).replace(" ", ""),
                   Reclaimable=f"{human_size(row['RawReclaimable']).replace(' ', '')} ({percent}%)")
    if args.format and fmt.is_json(args.format):
        sys.stdout.write(fmt.dump_json(rows))
        return 0
    sys.stdout.write(fmt.render(args.format or "table {{.Type}}\t{{.Total}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}",
                                rows))
    return 0


def prune(ctx, argv: list[str]) -> int:
    parser = _parser("system prune", "Remove unused data")
    parser.add_argument("-a", "--all", action="store_true", help="remove all unused images, not only dangling ones")
    parser.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--volumes", action="store_true", help="prune volumes too")
    args = _parse(parser, argv)
    if not args.force and sys.stdin.isatty():
        sys.stdout.write("WARNING! This command removes:\n\t- all stopped containers\n"
                         + ("\t- all volumes not used by at least one container\n" if args.volumes else "")
                         + "\t- all dangling images\n\nAre you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    from capsa.ctl.output import human_size
    from capsa.manager.containers import Containers
    from capsa.manager.volumes import Volumes

    reclaimed = 0
    removed = Containers(ctx.store).prune()
    print("Deleted Containers")
    for container_id, size in removed:
        print(container_id)
        reclaimed += size
    if args.volumes:
        print("Deleted Volumes")
        for name, size in Volumes(ctx.store).prune():
            print(name)
            reclaimed += size
    images = ctx.images
    sizes = {image.id: image.size for image in images.list()}
    print("Deleted Images")
    for image_id in images.prune(all_images=args.all):
        print(image_id)
        reclaimed += sizes.get(image_id, 0)
    print(f"Total reclaimed space: {human_size(reclaimed).replace(' ', '')}")
    return 0


def refresh(ctx, argv: list[str]) -> int:
    """system migrate: bring every container's record up to date with its monitor and runtime
    (what every command does for the containers it touches; the boot refresh itself runs on the
    first call after a reboot)."""
    parser = _parser("system migrate", "Bring the store's records up to date with the running containers")
    _parse(parser, argv)
    from capsa.manager.containers import Containers

    Containers(ctx.store).list(sync=True)
    return 0
