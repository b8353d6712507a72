"""capsactl's image commands: images, pull, push, load, save, tag, untag, rmi, import and
image inspect/prune/exists/history, with podman's flags, output and exit codes.

Progress and "Getting image source signatures"-style lines go to stderr, results (ids, names)
to stdout, as podman does, so that `id=$(capsactl pull ...)` works.
"""

from __future__ import annotations

import argparse
import sys

from capsa.ctl.flags import boolean as _bool
from capsa.ctl.output import human_size, human_time


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"capsactl {prog}", description=description)


def _emit(ctx, status: str, image_id: str = "", name: str = "") -> None:
    from capsa.manager import events

    events.emit(ctx.paths, status, "image", id=image_id, name=name, image=name)


def _progress(quiet: bool):
    from capsa.manager.progress import QUIET, Progress

    return QUIET if quiet else Progress(sys.stderr)




# --- import, load, save ----------------------------------------------------------------------

def import_(ctx, argv: list[str]) -> int:
    parser = _parser("import", "Import a tarball (or a root directory) to create a filesystem image")
    parser.add_argument("-c", "--change", action="append", default=[],
                        help="apply a Dockerfile instruction: CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL")
    parser.add_argument("-m", "--message", default="", help="the commit message of the image's history")
    parser.add_argument("-q", "--quiet", action="store_true")
    parser.add_argument("source")
    parser.add_argument("reference", nargs="?")
    args = parser.parse_args(argv)
    image_id = ctx.images.import_rootfs(args.source, args.reference, parse_changes(args.change), args.message)
    _emit(ctx, "import", image_id, args.reference or "")
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
            try:
                command = json.loads(value) if value.startswith("[") else ["/bin/sh", "-c", value]
            except ValueError as err:
                raise ImageError(f"--change {change!r}: not a JSON list: {err}") from None
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
        elif instruction == "VOLUME":
            for volume in (json.loads(value) if value.startswith("[") else value.split()):
                config.setdefault("Volumes", {})[volume] = {}
        else:
            raise ImageError(f"--change {change!r}: unsupported instruction {instruction}")
    return config


def load(ctx, argv: list[str]) -> int:
    parser = _parser("load", "Load image(s) from a tar archive (docker-archive or OCI archive)")
    parser.add_argument("-i", "--input", help="read from this archive instead of stdin")
    parser.add_argument("-q", "--quiet", action="store_true", help="suppress the progress output")
    args = parser.parse_args(argv)
    from capsa.manager import archive

    if args.input:
        loaded = archive.load(ctx.images, args.input, _progress(args.quiet))
    else:
        if sys.stdin.isatty():
            from capsa.manager.errors import ImageError

            raise ImageError("cannot read an archive from a terminal: give it with -i or on stdin")
        loaded = _load_stdin(ctx, args.quiet)
    for image_id, names in loaded:
        _emit(ctx, "load", image_id, names[0] if names else "")
        for name in names or [f"sha256:{image_id}"]:
            print(f"Loaded image: {name}")
    return 0


def _load_stdin(ctx, quiet: bool):
    """stdin copied into tmp first: an archive is read in any order (a symlinked layer, ...)."""
    import os
    import shutil

    from capsa.manager import archive
    from capsa.manager.images import clean_tmp, disk_error, scratch

    clean_tmp(ctx.paths)
    ctx.paths.ensure()
    tmp = scratch(ctx.paths, "load")
    try:
        with open(tmp, "xb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
        return archive.load(ctx.images, tmp, _progress(quiet))
    except OSError as err:
        raise disk_error(err, "cannot read the archive from stdin") from None
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def save(ctx, argv: list[str]) -> int:
    parser = _parser("save", "Save image(s) to an archive")
    parser.add_argument("-o", "--output", help="write to this file (default: stdout, if it is not a terminal)")
    parser.add_argument("--format", default="docker-archive", help="docker-archive (default) or oci-archive")
    parser.add_argument("-m", "--multi-image-archive", action="store_true",
                        help="several images in one docker-archive")
    parser.add_argument("-q", "--quiet", action="store_true")
    parser.add_argument("--compress", action="store_true", help="accepted for podman's sake (no effect)")
    parser.add_argument("images", nargs="+")
    args = parser.parse_args(argv)
    import os

    from capsa.manager import archive
    from capsa.manager.errors import ImageError

    if len(args.images) > 1 and not args.multi_image_archive and args.format == "docker-archive":
        args.multi_image_archive = True  # podman saves them all in one archive too
    refs = [(ctx.images.resolve(text), text) for text in args.images]
    progress = _progress(args.quiet or not args.output)
    if not args.output:
        if sys.stdout.isatty():
            raise ImageError("refusing to save to terminal. Use -o flag or redirect")
        archive.save(ctx.images, refs, sys.stdout.buffer, args.format, progress)
        sys.stdout.flush()
    else:
        partial = f"{args.output}.capsactl-partial"
        try:
            with open(partial, "wb") as out:
                archive.save(ctx.images, refs, out, args.format, progress)
            os.rename(partial, args.output)
        except OSError as err:
            raise ImageError(f"cannot write {args.output}: {err.strerror or err}") from None
        finally:
            if os.path.lexists(partial):
                os.unlink(partial)
    for image, text in refs:
        _emit(ctx, "save", image.id, text)
    return 0


# --- pull, push ------------------------------------------------------------------------------

def _registry_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-verify", type=_bool, default=True, nargs="?", const=True,
                        help="require HTTPS and verify certificates (default true); false allows plain HTTP")
    parser.add_argument("--creds", help="user[:password] for the registry")
    parser.add_argument("--cert-dir", help="a directory of CA certificates (*.crt) to trust")
    parser.add_argument("--authfile", help="credentials file of capsactl login (default: podman's auth.json)")
    parser.add_argument("-q", "--quiet", action="store_true", help="suppress the progress output")


def _credentials(args):
    if not args.creds:
        return None
    user, colon, password = args.creds.partition(":")
    if not colon:
        import getpass

        password = getpass.getpass(f"Password for {user}: ")
    return user, password


def pull(ctx, argv: list[str]) -> int:
    parser = _parser("pull", "Pull an image from a registry")
    _registry_options(parser)
    parser.add_argument("--platform", help="OS/ARCH[/VARIANT] to choose from a manifest list (default: this machine's)")
    parser.add_argument("--arch")
    parser.add_argument("--os")
    parser.add_argument("--variant")
    parser.add_argument("references", nargs="+")
    args = parser.parse_args(argv)
    from capsa.manager import registry

    platform = _platform(args)
    for text in args.references:
        text = text.removeprefix("docker://")
        progress = _progress(args.quiet)
        image_id = registry.pull(ctx.images, text, progress=progress, tls_verify=args.tls_verify,
                                 creds=_credentials(args), cert_dir=args.cert_dir, platform=platform,
                                 authfile=args.authfile)
        _emit(ctx, "pull", image_id, text)
        print(image_id)
    return 0


def _platform(args) -> tuple[str, str | None, str | None]:
    os_name, arch, variant = args.os or "linux", args.arch, args.variant
    if args.platform:
        parts = args.platform.split("/")
        os_name = parts[0] or os_name
        arch = parts[1] if len(parts) > 1 else arch
        variant = parts[2] if len(parts) > 2 else variant
    return os_name, arch, variant


def push(ctx, argv: list[str]) -> int:
    parser = _parser("push", "Push an image to a specified destination")
    _registry_options(parser)
    parser.add_argument("-f", "--format", help="manifest type: oci or v2s2 (default: the image's own)")
    parser.add_argument("--digestfile", help="write the pushed manifest's digest to this file")
    parser.add_argument("--remove-signatures", action="store_true", help="accepted for podman's sake")
    parser.add_argument("image")
    parser.add_argument("destination", nargs="?")
    args = parser.parse_args(argv)
    from capsa.manager import registry
    from capsa.manager.errors import ImageError

    image = ctx.images.resolve(args.image)
    destination = (args.destination or args.image).removeprefix("docker://")
    media_type = {None: None, "oci": registry.OCI_MANIFEST, "v2s2": registry.DOCKER_MANIFEST}.get(args.format, "?")
    if media_type == "?":
        raise ImageError(f"unsupported --format {args.format!r}: oci or v2s2")
    digest = registry.push(ctx.images, image, destination, progress=_progress(args.quiet),
                           tls_verify=args.tls_verify, creds=_credentials(args), cert_dir=args.cert_dir,
                           media_type=media_type, authfile=args.authfile)
    if args.digestfile:
        with open(args.digestfile, "w") as f:
            f.write(digest)
    _emit(ctx, "push", image.id, destination)
    return 0


# --- names, removal --------------------------------------------------------------------------

def tag(ctx, argv: list[str]) -> int:
    parser = _parser("tag", "Add an additional name to a local image")
    parser.add_argument("image")
    parser.add_argument("targets", nargs="+")
    args = parser.parse_args(argv)
    image = ctx.images.resolve(args.image)
    for target in args.targets:
        name = ctx.images.tag(image, target)
        _emit(ctx, "tag", image.id, name)
    return 0


def untag(ctx, argv: list[str]) -> int:
    parser = _parser("untag", "Remove names from a local image (all of them when none is given)")
    parser.add_argument("image")
    parser.add_argument("names", nargs="*")
    args = parser.parse_args(argv)
    image = ctx.images.resolve(args.image)
    for name in ctx.images.untag(image, args.names):
        _emit(ctx, "untag", image.id, name)
    return 0


def rmi(ctx, argv: list[str]) -> int:
    """podman's exit codes: 0 removed, 1 no such image, 2 an image in use, 125 anything else."""
    parser = _parser("rmi", "Remove one or more images from local storage")
    parser.add_argument("-f", "--force", action="store_true",
                        help="remove the containers using the image too, and ignore unknown images")
    parser.add_argument("-a", "--all", action="store_true", help="remove all images")
    parser.add_argument("-i", "--ignore", action="store_true", help="ignore unknown images")
    parser.add_argument("images", nargs="*")
    args = parser.parse_args(argv)
    from capsa.manager.errors import AmbiguousId, InvalidState, NoSuchImage

    if not args.images and not args.all:
        parser.error("give at least one image, or --all")
    targets = [(image, None) for image in ctx.images.list()] if args.all else []
    code = 0
    for text in args.images:
        try:
            targets.append((ctx.images.resolve(text), text))
        except (NoSuchImage, AmbiguousId) as err:
            if isinstance(err, NoSuchImage) and (args.ignore or args.force):
                continue
            sys.stderr.write(f"Error: {err}\n")
            code = code or (1 if isinstance(err, NoSuchImage) else 125)
    deleted: set[str] = set()
    for image, text in targets:
        if image.id in deleted:
            continue
        try:
            if args.force:
                _remove_users(ctx, image.id)
            names, gone = ctx.images.remove(image, None if args.all else text)
        except InvalidState as err:
            sys.stderr.write(f"Error: {err}\n")
            code = 2
            continue
        except NoSuchImage:
            continue
        for name in names:
            print(f"Untagged: {name}")
            _emit(ctx, "untag", image.id, name)
        if gone:
            deleted.add(image.id)
            print(f"Deleted: {image.id}")
            _emit(ctx, "remove", image.id, names[0] if names else "")
    return code


def _remove_users(ctx, image_id: str) -> None:
    """rmi -f: the containers made from the image go first (podman's rmi --force), through the
    containers' own `rm -f`, which stops them and unmounts their rootfs."""
    users = ctx.images.users(image_id)
    if not users:
        return
    import contextlib
    import io

    from capsa.manager.errors import InvalidState

    try:
        from capsa.ctl import containers
    except ImportError:
        raise InvalidState(f"image {image_id[:12]} is in use by container(s) {', '.join(n for _, n in users)}: "
                           f"remove them first") from None
    with contextlib.redirect_stdout(io.StringIO()):
        containers.rm(ctx, ["-f", *[cid for cid, _ in users]])


def prune(ctx, argv: list[str]) -> int:
    parser = _parser("image prune", "Remove unused images")
    parser.add_argument("-a", "--all", action="store_true", help="remove every image no container uses, "
                        "not only dangling ones")
    parser.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--filter", action="append", default=[], help="accepted: until=, label= (as images --filter)")
    args = parser.parse_args(argv)
    if not args.force:
        what = "all images not used by containers" if args.all else "all dangling images"
        sys.stdout.write(f"WARNING! This command removes {what}.\nAre you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    for image_id in ctx.images.prune(args.all):
        print(image_id)
        _emit(ctx, "remove", image_id)
    return 0


def exists(ctx, argv: list[str]) -> int:
    parser = _parser("image exists", "Check if an image exists in local storage (exit 0 if so, 1 if not)")
    parser.add_argument("image")
    args = parser.parse_args(argv)
    return 0 if ctx.images.exists(args.image) else 1


# --- inspection ------------------------------------------------------------------------------

def inspect(ctx, argv: list[str]) -> int:
    parser = _parser("image inspect", "Display the configuration of an image")
    parser.add_argument("-f", "--format", help="'json' (default) or a Go template such as {{.Id}}")
    parser.add_argument("images", nargs="+")
    args = parser.parse_args(argv)
    from capsa.manager.errors import NoSuchImage

    data, code = [], 0
    for text in args.images:
        try:
            data.append(ctx.images.inspect_data(ctx.images.resolve(text)))
        except NoSuchImage as err:
            sys.stderr.write(f"Error: {err}\n")
            code = 125
    _print_objects(data, args.format)
    return code


def history(ctx, argv: list[str]) -> int:
    parser = _parser("history", "Show history of a specified image")
    parser.add_argument("-H", "--human", type=_bool, nargs="?", const=True, default=True)
    parser.add_argument("--no-trunc", "--notruncate", action="store_true", dest="no_trunc")
    parser.add_argument("-q", "--quiet", action="store_true")
    parser.add_argument("--format")
    parser.add_argument("image")
    args = parser.parse_args(argv)
    image = ctx.images.resolve(args.image)
    rows = ctx.images.history(image)
    if args.quiet:
        for row in rows:
            print(row["id"] if args.no_trunc or row["id"] == "<missing>" else row["id"][:12])
        return 0
    if args.format == "json":
        out = [{"id": r["id"], "created": r["created"], "CreatedBy": r["created_by"], "size": r["size"],
                "comment": r["comment"], "Created": r["created"][:19] + "Z" if r["created"] else ""} for r in rows]
        _dump_json(out)
        return 0
    records = []
    for r in rows:
        created_by = r["created_by"]
        if not args.no_trunc and len(created_by) > 45:
            created_by = created_by[:42] + "..."
        records.append({"ID": r["id"] if args.no_trunc or r["id"] == "<missing>" else r["id"][:12],
                        "Created": human_time(r["created"]) if args.human else r["created"],
                        "CreatedBy": created_by, "Size": human_size(r["size"]) if args.human else str(r["size"]),
                        "Comment": r["comment"], "Tags": " ".join(r["tags"])})
    if args.format:
        _print_template(records, args.format)
        return 0
    _print_table(["ID", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
                 [[r["ID"], r["Created"], r["CreatedBy"], r["Size"], r["Comment"]] for r in records])
    return 0


def images(ctx, argv: list[str]) -> int:
    parser = _parser("images", "List images in local storage")
    parser.add_argument("-a", "--all", action="store_true", help="show intermediate images too (there are none here)")
    parser.add_argument("-q", "--quiet", action="store_true", help="display only image IDs")
    parser.add_argument("--format", help="'json' or a Go template such as {{.ID}} or 'table {{.Repository}}'")
    parser.add_argument("--digests", action="store_true", help="show digests")
    parser.add_argument("-f", "--filter", action="append", default=[],
                        help="reference=, before=, since=, dangling=, label=, id=, containers=, until=")
    parser.add_argument("--no-trunc", action="store_true")
    parser.add_argument("-n", "--noheading", action="store_true")
    parser.add_argument("--sort", default="created", choices=["created", "id", "repository", "size", "tag"])
    parser.add_argument("reference", nargs="?")
    args = parser.parse_args(argv)
    from capsa.manager import imagefilter

    filters = [*args.filter, *([f"reference={args.reference}"] if args.reference else [])]
    listed = imagefilter.apply(ctx.images, ctx.images.list(), filters)
    counts = _container_counts(ctx)
    if args.format == "json":
        _dump_json([_list_entry(image, counts.get(image.id, 0)) for image in _sorted(listed, args.sort)])
        return 0
    rows = []
    for image in listed:
        for name in image.names or ["<none>:<none>"]:
            repository, _, tag_ = name.rpartition(":")
            rows.append(_row(image, repository, tag_, args.no_trunc, counts.get(image.id, 0)))
    rows = _sorted_rows(rows, args.sort)
    if args.quiet:
        for image_id in dict.fromkeys(r["ID"] for r in rows):
            print(image_id)
        return 0
    if args.format:
        _print_template(rows, args.format, args.noheading)
        return 0
    headers = ["REPOSITORY", "TAG", *(["DIGEST"] if args.digests else []), "IMAGE ID", "CREATED", "SIZE"]
    keys = ["Repository", "Tag", *(["Digest"] if args.digests else []), "ID", "CreatedSince", "Size"]
    _print_table(None if args.noheading else headers, [[r[k] for k in keys] for r in rows])
    return 0


def _container_counts(ctx) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in ctx.store.query("SELECT image_id, COUNT(*) AS n FROM containers GROUP BY image_id"):
        counts[row["image_id"]] = row["n"]
    return counts


def _row(image, repository: str, tag_: str, no_trunc: bool, containers: int) -> dict:
    import calendar
    import time

    created = image.config_created
    try:
        stamp = calendar.timegm(time.strptime(created[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        stamp = 0
    return {"ID": image.id if no_trunc else image.id[:12], "Id": image.id, "Repository": repository, "Tag": tag_,
            "Digest": image.digest or "", "CreatedSince": human_time(created), "Created": human_time(created),
            "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(stamp)), "CreatedUnix": stamp,
            "Size": human_size(image.size), "RawSize": image.size, "Containers": containers,
            "Names": image.names, "Labels": image.process_defaults.get("Labels") or {}, "ReadOnly": False,
            "Dangling": not image.names}


def _sorted(listed, key: str):
    if key == "created":
        return sorted(listed, key=lambda i: i.config_created, reverse=True)
    if key == "size":
        return sorted(listed, key=lambda i: i.size)
    if key == "id":
        return sorted(listed, key=lambda i: i.id)
    return sorted(listed, key=lambda i: i.names[0] if i.names else "")


def _sorted_rows(rows: list[dict], key: str) -> list[dict]:
    if key == "created":
        return sorted(rows, key=lambda r: r["CreatedUnix"], reverse=True)
    if key == "size":
        return sorted(rows, key=lambda r: r["RawSize"])
    field = {"id": "Id", "repository": "Repository", "tag": "Tag"}[key]
    return sorted(rows, key=lambda r: r[field])


def _list_entry(image, containers: int) -> dict:
    """podman images --format json's object."""
    import calendar
    import time

    created = image.config_created
    try:
        stamp = calendar.timegm(time.strptime(created[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        stamp = 0
    repos = sorted({n.rpartition(":")[0] for n in image.names})
    return {"Id": image.id, "ParentId": "", "RepoTags": image.names or None,
            "RepoDigests": [f"{r}@{image.digest}" for r in repos] if image.digest else [],
            "Size": image.size, "SharedSize": 0, "VirtualSize": image.size,
            "Labels": image.process_defaults.get("Labels"), "Containers": containers, "Names": image.names or None,
            "Digest": image.digest or "", "History": image.extra.get("names_history", image.names) or None,
            "Created": stamp, "CreatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))}


# --- output helpers (podman's tabwriter: min width 12, padding 2) -------------------------------

def _print_table(headers: list[str] | None, rows: list[list[str]]) -> None:
    lines = ([headers] if headers else []) + [[str(c) for c in row] for row in rows]
    if not lines:
        return
    widths = [max(12, max(len(line[i]) for line in lines) + 2) for i in range(len(lines[0]))]
    for line in lines:
        cells = [cell.ljust(widths[i]) if i < len(line) - 1 else cell for i, cell in enumerate(line)]
        print("".join(cells).rstrip())


def _dump_json(value) -> None:
    import json

    json.dump(value, sys.stdout, indent=4)
    sys.stdout.write("\n")


def _print_objects(data: list[dict], fmt: str | None) -> None:
    if not fmt or fmt == "json":
        _dump_json(data)
        return
    for obj in data:
        print(render_template(fmt, obj))


def _print_template(rows: list[dict], fmt: str, noheading: bool = False) -> None:
    """`table {{.A}}\\t{{.B}}`: a header and aligned columns; a plain template: a line per row."""
    fmt = fmt.replace("\\t", "\t").replace("\\n", "\n")
    if fmt.startswith("table"):
        template = fmt[len("table"):].strip()
        cells = [render_template(template, row).split("\t") for row in rows]
        header = None if noheading else [_header_of(part) for part in template.split("\t")]
        _print_table(header, cells)
        return
    for row in rows:
        print(render_template(fmt, row))


def _header_of(part: str) -> str:
    import re

    fields = re.findall(r"\{\{\s*\.(\w+)\s*\}\}", part)
    names = {"ID": "IMAGE ID", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "CreatedBy": "CREATED BY"}
    return " ".join(names.get(f, f.upper()) for f in fields) or part


def render_template(template: str, obj: dict) -> str:
    """A Go-template subset: {{.Field}}, {{.A.B}}, {{json .Field}}, {{upper|lower .Field}}."""
    import json
    import re

    def value_of(path: str):
        value = obj
        for key in path.split(".")[1:]:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    def replace(match: re.Match) -> str:
        words = match.group(1).split()
        if len(words) == 2 and words[0] in ("json", "upper", "lower") and words[1].startswith("."):
            value = value_of(words[1])
            if words[0] == "json":
                return json.dumps(value)
            return str(value).upper() if words[0] == "upper" else str(value).lower()
        if len(words) == 1 and words[0].startswith("."):
            value = value_of(words[0]) if words[0] != "." else obj
            if isinstance(value, (dict, list)):
                return _go_print(value)
            return "<no value>" if value is None else str(value)
        from capsa.manager.errors import ManagerError

        raise ManagerError(f"unsupported template action {{{{{match.group(1)}}}}} in --format")

    return re.sub(r"\{\{\s*(.*?)\s*\}\}", replace, template)


def _go_print(value) -> str:
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_print(v)}" for k, v in value.items()) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go_print(v) for v in value) + "]"
    return str(value)


# --- login, logout ---------------------------------------------------------------------------

def _auth_key(text: str) -> str:
    """podman's argument: a registry, or registry/repository, maybe with a scheme or docker://."""
    for prefix in ("docker://", "https://", "http://"):
        text = text.removeprefix(prefix)
    key = text.rstrip("/")
    if not key or " " in key:
        from capsa.manager.auth import AuthError

        raise AuthError(f"invalid registry {text!r}")
    return key


def login(ctx, argv: list[str]) -> int:
    parser = _parser("login", "Log in to a container registry")
    parser.add_argument("-u", "--username")
    parser.add_argument("-p", "--password")
    parser.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    parser.add_argument("--authfile", help="the credentials file (default: podman's auth.json)")
    parser.add_argument("--tls-verify", type=_bool, default=True, nargs="?", const=True)
    parser.add_argument("--cert-dir")
    parser.add_argument("--get-login", action="store_true", help="print the user logged in to the registry")
    parser.add_argument("registry")
    args = parser.parse_args(argv)
    from capsa.manager import auth, registry

    key = _auth_key(args.registry)
    host = key.split("/", 1)[0]
    if args.get_login:
        stored = auth.lookup(host, key.partition("/")[2] or None, args.authfile)
        if stored is None:
            raise auth.AuthError(f"not logged into {key}")
        print(stored[0])
        return 0
    if args.password is not None and args.password_stdin:
        raise auth.AuthError("--password and --password-stdin cannot be given together")
    if args.username is None and args.password is None and not args.password_stdin:
        stored = auth.lookup(host, key.partition("/")[2] or None, args.authfile)
        if stored is not None:
            print(f"Authenticating with existing credentials for {key}")
            registry.check_login(host, stored, args.tls_verify, args.cert_dir)
            print(f"Existing credentials are valid. Already logged in to {key}")
            return 0
    user, password = _ask_login(args)
    registry.check_login(host, (user, password), args.tls_verify, args.cert_dir)
    auth.store(key, user, password, args.authfile)
    print("Login Succeeded!")
    return 0


def _ask_login(args) -> tuple[str, str]:
    """The user and password from the flags, stdin or the terminal (podman's order)."""
    import sys

    from capsa.manager.auth import AuthError

    user = args.username
    if user is None:
        if not sys.stdin.isatty() or args.password_stdin:
            raise AuthError("give the user name with --username")
        user = input("Username: ").strip()
    if args.password_stdin:
        password = sys.stdin.read().rstrip("\n")
    elif args.password is not None:
        password = args.password
    elif sys.stdin.isatty():
        import getpass

        password = getpass.getpass("Password: ")
    else:
        raise AuthError("give the password with --password or --password-stdin")
    if not user or not password:
        raise AuthError("the user name and the password must not be empty")
    return user, password


def logout(ctx, argv: list[str]) -> int:
    parser = _parser("logout", "Log out of a container registry")
    parser.add_argument("--authfile", help="the credentials file (default: podman's auth.json)")
    parser.add_argument("-a", "--all", action="store_true", help="remove the credentials of every registry")
    parser.add_argument("registry", nargs="?")
    args = parser.parse_args(argv)
    from capsa.manager import auth

    if args.all:
        auth.remove_all(args.authfile)
        print("Removed login credentials for all registries")
        return 0
    if not args.registry:
        raise auth.AuthError("give a registry to log out of, or --all")
    key = _auth_key(args.registry)
    if not auth.remove(key, args.authfile):
        raise auth.AuthError(f"not logged into {key}")
    print(f"Removed login credentials for {key}")
    return 0
