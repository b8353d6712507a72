"""capsactl's network commands: network create, ls, inspect, rm, exists, prune (podman's flags and
output over capsa.manager.network)."""

from __future__ import annotations

import argparse
import json
import re
import sys

from capsa.manager import network as networks

# podman's Go field names (types.Network) for --format templates, by the JSON key.
GO_NAMES = {"name": "Name", "id": "ID", "driver": "Driver", "network_interface": "NetworkInterface",
            "created": "Created", "subnets": "Subnets", "ipv6_enabled": "IPv6Enabled", "internal": "Internal",
            "dns_enabled": "DNSEnabled", "labels": "Labels", "options": "Options", "ipam_options": "IPAMOptions",
            "network_dns_servers": "NetworkDNSServers"}


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"capsactl network {prog}", description=description)


def _key_values(items: list[str], flag: str) -> dict[str, str]:
    result = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise networks.NetworkError(f"{flag} {item!r}: expected KEY=VALUE")
        result[key] = value
    return result


def create(ctx, argv: list[str]) -> int:
    parser = _parser("create", "Create a network")
    parser.add_argument("-d", "--driver", default="bridge", help="driver (bridge)")
    parser.add_argument("--subnet", action="append", default=[], help="subnet in CIDR form")
    parser.add_argument("--gateway", action="append", default=[], help="gateway of the subnet (in order)")
    parser.add_argument("--ip-range", action="append", default=[], help="addresses to give containers (in order)")
    parser.add_argument("--internal", action="store_true", help="no route out of the network")
    parser.add_argument("--disable-dns", action="store_true", help="no aardvark-dns name resolution")
    parser.add_argument("--label", action="append", default=[], help="KEY=VALUE metadata")
    parser.add_argument("-o", "--opt", action="append", default=[], help="driver option KEY=VALUE (mtu, vlan, isolate)")
    parser.add_argument("--interface-name", help="name of the bridge on the host")
    parser.add_argument("--ignore", action="store_true", help="do not fail if the network exists")
    parser.add_argument("--ipv6", action="store_true", help="IPv6 (needs an IPv6 --subnet)")
    parser.add_argument("name", nargs="?")
    args = parser.parse_args(argv)
    if args.ipv6 and not any(":" in s for s in args.subnet):
        raise networks.NetworkError("--ipv6 needs an IPv6 --subnet: capsactl chooses IPv4 subnets only")
    created = networks.create_network(
        ctx.paths, args.name, driver=args.driver, subnets=args.subnet, gateways=args.gateway,
        ip_ranges=args.ip_range, internal=args.internal, dns=not args.disable_dns, interface=args.interface_name,
        labels=_key_values(args.label, "--label"), options=_key_values(args.opt, "--opt"),
        ignore_existing=args.ignore)
    print(created["name"])
    return 0


def ls(ctx, argv: list[str]) -> int:
    parser = _parser("ls", "List networks")
    parser.add_argument("-f", "--filter", action="append", default=[],
                        help="name=, id=, driver=, label=KEY[=VALUE]")
    parser.add_argument("--format", help="'json' or a Go template such as {{.Name}}")
    parser.add_argument("--no-trunc", action="store_true", help="full network ids")
    parser.add_argument("-q", "--quiet", action="store_true", help="names only")
    args = parser.parse_args(argv)
    shown = [n for n in networks.list_networks(ctx.paths) if matches_filters(n, args.filter)]
    if args.quiet:
        for network in shown:
            print(network["name"])
        return 0
    if args.format == "json":
        json.dump(shown, sys.stdout, indent=2)
        print()
        return 0
    rows = [list_fields(n, args.no_trunc) for n in shown]
    template = args.format or "table {{.ID}}\t{{.Name}}\t{{.Driver}}"
    headers = {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "NetworkInterface": "NETWORK INTERFACE"}
    sys.stdout.write(render(template, rows, headers))
    return 0


def list_fields(network: dict, no_trunc: bool = False) -> dict:
    """A network's fields for templates, as podman's ls shows them (labels as k=v,k=v)."""
    fields = {go: network.get(key) for key, go in GO_NAMES.items()}
    fields["ID"] = network["id"] if no_trunc else network["id"][:12]
    fields["Labels"] = ",".join(f"{k}={v}" for k, v in sorted((network.get("labels") or {}).items()))
    return fields


def matches_filters(network: dict, filters: list[str]) -> bool:
    """podman's network filters: values of one key are alternatives, different keys must all match."""
    wanted: dict[str, list[str]] = {}
    for item in filters:
        key, eq, value = item.partition("=")
        if not eq or key not in ("name", "id", "driver", "label", "label!"):
            raise networks.NetworkError(f"invalid filter {item!r}: use name=, id=, driver= or label=")
        wanted.setdefault(key, []).append(value)
    labels = network.get("labels") or {}

    def has_label(text: str) -> bool:
        key, eq, value = text.partition("=")
        return key in labels and (not eq or labels[key] == value)

    checks = {"name": lambda v: re.search(v, network["name"]) is not None,
              "id": lambda v: network["id"].startswith(v), "driver": lambda v: network["driver"] == v,
              "label": has_label, "label!": lambda v: not has_label(v)}
    return all(any(checks[key](v) for v in values) for key, values in wanted.items())


def inspect(ctx, argv: list[str]) -> int:
    parser = _parser("inspect", "Display the configuration of one or more networks")
    parser.add_argument("-f", "--format", help="'json' or a Go template such as {{.Name}}")
    parser.add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    found, errors = [], []
    known = networks.load_networks(ctx.paths)
    for name in args.names:
        try:
            found.append(networks.get_network(ctx.paths, name, known))
        except networks.NetworkError as err:
            errors.append(f"network {name}: {err}")
    if args.format and args.format != "json":
        sys.stdout.write(render(args.format, [{go: n.get(key) for key, go in GO_NAMES.items()} for n in found], {}))
    else:
        json.dump(found, sys.stdout, indent=5)
        print()
    for error in errors:
        sys.stderr.write(f"Error: {error}\n")
    return 125 if errors else 0


def exists(ctx, argv: list[str]) -> int:
    parser = _parser("exists", "Check if a network exists (exit 0 if it does, 1 if not)")
    parser.add_argument("name")
    args = parser.parse_args(argv)
    try:
        networks.get_network(ctx.paths, args.name)
    except networks.NoSuchNetwork:
        return 1
    return 0


def rm(ctx, argv: list[str]) -> int:
    parser = _parser("rm", "Remove networks (exit 1: one did not exist; 2: one is in use)")
    parser.add_argument("-f", "--force", action="store_true", help="remove the containers using it first")
    parser.add_argument("-t", "--time", type=int, default=None, help="seconds to wait for those containers to stop")
    parser.add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    status = 0
    for name in args.names:
        try:
            network = networks.get_network(ctx.paths, name)
            users = sorted(networks.network_users(ctx.paths, ctx.store).get(network["name"], ()))
            if users and network["name"] != networks.DEFAULT_NETWORK:
                if not args.force:
                    sys.stderr.write(f'Error: "{network["name"]}" has associated containers with it. Use -f to '
                                     f"forcibly delete containers: network is being used\n")
                    status = status or 2
                    continue
                remove_containers(ctx, users, args.time)
            networks.remove_network(ctx.paths, network["name"])
            print(network["name"])
        except networks.NoSuchNetwork as err:
            sys.stderr.write(f"Error: {err}\n")
            status = status or 1
        except networks.NetworkError as err:
            sys.stderr.write(f"Error: {err}\n")
            status = 125
    return status


def remove_containers(ctx, container_ids: list[str], timeout: int | None) -> None:
    """rm -f of the containers on a network, through the containers' own `rm` command (whose
    clean-up tears their networks down)."""
    import importlib

    from capsa.ctl import COMMANDS

    module_name, function, _ = COMMANDS["rm"]
    rm_command = getattr(importlib.import_module(f"capsa.ctl.{module_name}"), function)
    argv = ["--force"] + (["--time", str(timeout)] if timeout is not None else []) + container_ids
    if rm_command(ctx, argv) != 0:
        raise networks.NetworkError(f"cannot remove the containers using the network: {', '.join(c[:12] for c in container_ids)}")


def prune(ctx, argv: list[str]) -> int:
    parser = _parser("prune", "Remove networks no container uses")
    parser.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--filter", action="append", default=[], help="label=KEY[=VALUE], label!=...")
    args = parser.parse_args(argv)
    if not args.force:
        sys.stdout.write("WARNING! This will remove all networks not used by at least one container.\n"
                         "Are you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    users = networks.network_users(ctx.paths, ctx.store)
    for network in networks.list_networks(ctx.paths):
        if network["name"] == networks.DEFAULT_NETWORK or users.get(network["name"]):
            continue
        if not matches_filters(network, args.filter):
            continue
        networks.remove_network(ctx.paths, network["name"])
        print(network["name"])
    return 0


# --- a Go template subset (until capsa.ctl.format is shared): {{.Field}}, "table", \t ------------

_FIELD = re.compile(r"{{\s*\.([A-Za-z0-9_.]+)\s*}}")


def render(template: str, rows: list[dict], headers: dict[str, str]) -> str:
    """Each row through `template`; "table ..." adds a header line and aligns columns (podman's
    tabwriter: a column is its widest cell plus 2, at least 12)."""
    template = template.replace("\\t", "\t").replace("\\n", "\n")
    table = template.startswith("table ")
    if table:
        template = template[len("table "):]
    lines = [_FIELD.sub(lambda m, row=row: _value(row, m.group(1)), template) for row in rows]
    if not table:
        return "".join(line + "\n" for line in lines)
    header = _FIELD.sub(lambda m: headers.get(m.group(1), m.group(1).upper()), template)
    cells = [line.split("\t") for line in [header, *lines]]
    widths = [max(len(row[i]) if i < len(row) else 0 for row in cells) for i in range(max(map(len, cells)))]
    out = []
    for row in cells:
        padded = [cell.ljust(max(widths[i] + 2, 12)) if i < len(row) - 1 else cell for i, cell in enumerate(row)]
        out.append("".join(padded).rstrip() + "\n")
    return "".join(out)


def _value(row: dict, path: str) -> str:
    value: object = row
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part, value.get(next((k for k, go in GO_NAMES.items() if go == part), part)))
        else:
            return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "<no value>"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{v}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list):
        return "[" + " ".join(str(v) for v in value) + "]"
    return str(value)
