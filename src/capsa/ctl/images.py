"""capsactl's image commands: images, pull, push, load, save, tag, untag, rmi, import, image ...

(First cut: import and images; the rest is issue 17's images work.)
"""

from __future__ import annotations

import argparse
import sys

from capsa.ctl.output import human_size, human_time


def import_(ctx, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="capsactl import", description="Import a tarball (or a root directory) "
                                     "to create a filesystem image")
    parser.add_argument("-c", "--change", action="append", default=[],
                        help="apply a Dockerfile instruction: CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL")
    parser.add_argument("-q", "--quiet", action="store_true")
    parser.add_argument("source")
    parser.add_argument("reference", nargs="?")
    args = parser.parse_args(argv)
    image_id = ctx.images.import_rootfs(args.source, args.reference, parse_changes(args.change))
    print(f"sha256:{image_id}" if not args.quiet else image_id)
    return 0


def parse_changes(changes: list[str]) -> dict:
    """`--change` instructions into an image config's `config` (podman's import -c)."""
    import json
    import shlex

    from capsa.manager.errors import ImageError

    config: dict = {}
    for change in changes:
        instruction, _, value = change.strip().partition(" ")
        instruction = instruction.upper()
        value = value.strip()
        if instruction in ("CMD", "ENTRYPOINT"):
            command = json.loads(value) if value.startswith("[") else ["/bin/sh", "-c", value]
            config["Cmd" if instruction == "CMD" else "Entrypoint"] = command
        elif instruction == "ENV":
            key, eq, env_value = value.partition("=")
            if not eq:
                key, _, env_value = value.partition(" ")
            config.setdefault("Env", []).append(f"{key}={env_value.strip()}")
        elif instruction == "WORKDIR":
            config["WorkingDir"] = value
        elif instruction == "USER":
            config["User"] = value
        elif instruction == "LABEL":
            for item in shlex.split(value):
                key, _, label = item.partition("=")
                config.setdefault("Labels", {})[key] = label
        elif instruction == "STOPSIGNAL":
            config["StopSignal"] = value
        elif instruction == "EXPOSE":
            for port in value.split():
                config.setdefault("ExposedPorts", {})[port if "/" in port else port + "/tcp"] = {}
        else:
            raise ImageError(f"--change {change!r}: unsupported instruction {instruction}")
    return config


def images(ctx, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="capsactl images", description="List images in local storage")
    parser.add_argument("-q", "--quiet", action="store_true", help="display only image IDs")
    parser.add_argument("--format", help="'json' or a Go template such as {{.ID}}")
    parser.add_argument("--no-trunc", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    for image in ctx.images.list():
        for name in image.names or ["<none>:<none>"]:
            repository, _, tag = name.rpartition(":")
            rows.append({"Repository": repository, "Tag": tag, "Id": image.id, "Created": image.created,
                         "Size": image.size, "Names": image.names, "Digest": image.digest or ""})
    if args.quiet:
        for image_id in dict.fromkeys(r["Id"] for r in rows):
            print(image_id if args.no_trunc else image_id[:12])
        return 0
    if args.format == "json":
        import json

        json.dump(rows, sys.stdout, indent=4)
        print()
        return 0
    print(f"{'REPOSITORY':<40} {'TAG':<12} {'IMAGE ID':<14} {'CREATED':<16} SIZE")
    for r in rows:
        image_id = r["Id"] if args.no_trunc else r["Id"][:12]
        print(f"{r['Repository']:<40} {r['Tag']:<12} {image_id:<14} {human_time(r['Created']):<16} "
              f"{human_size(r['Size'])}")
    return 0
