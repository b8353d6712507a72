"""Networks: podman 4's netavark backend, driven as podman drives it, through its JSON interface.

capsa writes no netlink or firewall code of its own: netavark (Debian's, /usr/lib/podman/netavark)
makes the bridge, the veth pair, the addresses, routes and iptables rules, and starts aardvark-dns
for the networks with DNS; capsactl keeps what netavark does not:

    <graph root>/networks/<name>.json   a network's config, podman's file format (podman keeps
                                        them in /etc/containers/networks). The default network
                                        "podman" (bridge podman0, 10.88.0.0/16, no DNS) has no
                                        file: it is made in memory whenever the configs are read,
                                        with podman's fixed id, as podman does.
    <run root>/networks/                netavark's --config directory: aardvark-dns's config
                                        (aardvark-dns/<network>), and capsactl's IPAM record
                                        ipam.json with its lock ipam.lock. Under the run root
                                        (a tmpfs) as podman's /run/containers/networks/ipam.db:
                                        no address is in use after a reboot.
    <run root>/netns/netns-<id>         a container's network namespace (capsa.manager.netns)

IPAM: netavark 1.4 assigns no addresses (the caller passes static_ips), so this module does, as
podman's ipam.go: per subnet the next free address after the last one given, skipping the network
address, the gateway and the broadcast address. The record (ipam.json, a JSON file under an
exclusive flock, not a store table: it belongs to the run root's lifetime, not the graph root's)
also keeps what teardown needs: per container its name, namespace, networks, addresses, aliases
and published ports, so teardown(paths, container_id) needs nothing else, and network rm knows a
network is in use.

For `run`/`create` (the containers code calls this, and stores the returned info):

    for_run(paths, container_id, name, network_mode, ports) -> (netns_path or None, info)

    network_mode  "bridge" (podman's default network "podman"; the default for root), a network
                  name or several separated by commas: a namespace is made here (create_netns)
                  and set up through netavark; the OCI spec's network namespace gets path =
                  netns_path. info["status"] has netavark's answer (addresses, gateways,
                  dns_server_ips: write the container's /etc/resolv.conf with resolv_conf(info)
                  and /etc/hosts lines with hosts_entries(info, hostname, name); `inspect`'s
                  NetworkSettings is inspect_settings(info), `ps`'s PORTS ports_text(info["ports"])).
                  "none": no namespace made here: the spec has a network namespace without a path
                  (a new empty one: loopback only). "host": the spec has no network namespace.
                  "ns:PATH": the spec's network namespace path is PATH (nothing set up).
    ports         -p specs ("[ip:][hostPort:]containerPort[/tcp|udp|sctp]"), parsed and checked
                  here (a port already published or bound on the host is a clear error); only
                  for bridge networks.
    info          a JSON-serialisable dict: {"mode", "netns", "networks", "ports", "aliases",
                  "status"}.
                  cleanup(paths, container_id, info) undoes it all (netavark teardown, addresses
                  freed, namespace file removed); it is idempotent, for the exit hook and rm -f.

Holding the ports (podman's conmon keeps them bound): reserve_ports(info["ports"]) after for_run
gives inheritable fds for the monitor to keep open until the container exits (and to close before
cleanup and before a restart's for_run, whose check would otherwise find the ports taken).

When: for_run when the container starts (before the runtime creates it), cleanup after its init
exited (the monitor's exit hook) or at rm -f; a restart does both again, as podman sets a
container's network up at start and tears it down at stop. After a reboot, forget_after_reboot.

Rootless: netavark needs root; bridge networks are refused with a clear error (no slirp4netns).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import time
from contextlib import contextmanager

from capsa.manager.errors import ManagerError

DEFAULT_NETWORK = "podman"
# podman's default network, byte for byte (libnetwork/netavark/network.go: "do not change this ID").
DEFAULT_NETWORK_ID = "2f259bab93aaaaa2542ba43ef33eb990d0999ee1b9924b557b7be53c0b7a1bb9"
DEFAULT_SUBNET = "10.88.0.0/16"
BRIDGE_PREFIX = "podman"
# podman's default_subnet_pools (containers.conf): /24 networks for `network create` without --subnet.
SUBNET_POOLS = (("10.89.0.0/16", 24), ("10.90.0.0/15", 24), ("10.92.0.0/14", 24), ("10.96.0.0/11", 24),
                ("10.128.0.0/9", 24))
NAME_PATTERN = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")
# Where podman looks for its helpers (containers.conf helper_binaries_dir).
HELPER_DIRS = ("/usr/local/libexec/podman", "/usr/local/lib/podman", "/usr/libexec/podman", "/usr/lib/podman")
PROTOCOLS = ("tcp", "udp", "sctp")


class NetworkError(ManagerError):
    """A network that cannot be made, set up or torn down; netavark's own message when it failed."""


class NoSuchNetwork(NetworkError):
    def __init__(self, name_or_id: str):
        super().__init__(f"unable to find network with name or ID {name_or_id}: network not found")


# --- network configs ---------------------------------------------------------------------------

def networks_dir(paths) -> str:
    return os.path.join(paths.graph_root, "networks")


def run_dir(paths) -> str:
    return os.path.join(paths.run_root, "networks")


def _now_rfc3339() -> str:
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def default_network() -> dict:
    return {"name": DEFAULT_NETWORK, "id": DEFAULT_NETWORK_ID, "driver": "bridge",
            "network_interface": BRIDGE_PREFIX + "0", "created": _now_rfc3339(),
            "subnets": [{"subnet": DEFAULT_SUBNET, "gateway": "10.88.0.1"}],
            "ipv6_enabled": False, "internal": False, "dns_enabled": False,
            "ipam_options": {"driver": "host-local"}}


def load_networks(paths) -> dict[str, dict]:
    """Every network by name, the default one included. A file that is not a valid config (not
    JSON, a name other than its file's, a bad id) is skipped, as podman skips it."""
    networks: dict[str, dict] = {}
    directory = networks_dir(paths)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        names = []
    for file_name in names:
        if not file_name.endswith(".json"):
            continue
        try:
            with open(os.path.join(directory, file_name)) as f:
                network = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(network, dict) or network.get("name", "") + ".json" != file_name \
                or not NAME_PATTERN.match(network["name"]) or len(str(network.get("id", ""))) != 64:
            continue
        networks[network["name"]] = network
    networks.setdefault(DEFAULT_NETWORK, default_network())
    return networks


def get_network(paths, name_or_id: str, networks: dict[str, dict] | None = None) -> dict:
    """A network by name, full id or unique id prefix (podman's lookup)."""
    networks = load_networks(paths) if networks is None else networks
    if name_or_id in networks:
        return networks[name_or_id]
    matches = [n for n in networks.values() if name_or_id and n["id"].startswith(name_or_id)]
    if len(matches) > 1:
        raise NetworkError(f"more than one result for network ID {name_or_id}")
    if not matches:
        raise NoSuchNetwork(name_or_id)
    return matches[0]


def list_networks(paths) -> list[dict]:
    return [network for _, network in sorted(load_networks(paths).items())]


def create_network(paths, name: str | None = None, *, driver: str = "bridge", subnets: list[str] = (),
                   gateways: list[str] = (), ip_ranges: list[str] = (), internal: bool = False,
                   dns: bool = True, interface: str | None = None, labels: dict | None = None,
                   options: dict | None = None, ignore_existing: bool = False) -> dict:
    """Make a network config (podman's `network create`) and write its file; the config."""
    with _locked(os.path.join(networks_dir(paths), ".lock")):
        networks = load_networks(paths)
        if name is not None:
            if not NAME_PATTERN.match(name):
                raise NetworkError(f"network name {name} invalid: names must match [a-zA-Z0-9][a-zA-Z0-9_.-]*")
            if name in networks:
                if ignore_existing:
                    return networks[name]
                raise NetworkError(f"network name {name} already used: network already exists")
        if driver != "bridge":
            raise NetworkError(f"unsupported driver {driver}: capsactl supports the bridge driver only")
        network = {"name": name or _free_interface_name(networks), "id": _new_network_id(networks),
                   "driver": driver, "network_interface": interface or ""}
        if name is None:
            network["network_interface"] = network["name"]  # podman: a generated name is the bridge's too
        _check_interface(network, networks)
        network["created"] = _now_rfc3339()
        network["subnets"] = make_subnets(subnets, gateways, ip_ranges, used_subnets(networks),
                                          add_gateway=not internal or dns)
        network["ipv6_enabled"] = any(":" in s["subnet"] for s in network["subnets"])
        network["internal"] = internal
        network["dns_enabled"] = dns
        if labels:
            network["labels"] = dict(labels)
        if options:
            network["options"] = check_options(options)
        network["ipam_options"] = {"driver": "host-local"}
        _write_json(os.path.join(networks_dir(paths), network["name"] + ".json"), network)
        return network


def _new_network_id(networks: dict[str, dict]) -> str:
    ids = {n["id"] for n in networks.values()}
    while True:
        candidate = os.urandom(32).hex()
        if candidate not in ids and not candidate[:12].isdigit():
            return candidate


def _free_interface_name(networks: dict[str, dict]) -> str:
    """The first podmanN that is neither a network's name nor a bridge's (podman's GetFreeDeviceName)."""
    taken = set(networks) | {n.get("network_interface") for n in networks.values()} | set(_host_interfaces())
    number = 0
    while f"{BRIDGE_PREFIX}{number}" in taken:
        number += 1
    return f"{BRIDGE_PREFIX}{number}"


def _check_interface(network: dict, networks: dict[str, dict]) -> None:
    if not network["network_interface"]:
        network["network_interface"] = _free_interface_name(networks)
        return
    bridge = network["network_interface"]
    if not NAME_PATTERN.match(bridge) or len(bridge) > 15:
        raise NetworkError(f"bridge name {bridge} invalid: names must match [a-zA-Z0-9][a-zA-Z0-9_.-]* "
                           f"and have at most 15 characters")
    if any(n.get("network_interface") == bridge for n in networks.values()):
        raise NetworkError(f"bridge name {bridge} already in use")


def _host_interfaces() -> list[str]:
    try:
        return os.listdir("/sys/class/net")
    except OSError:
        return []


def used_subnets(networks: dict[str, dict]) -> list:
    """Subnets a new network must not overlap: other networks' and the host's routes (podman's
    GetUsedSubnets; the default network's subnet counts, but only from its config)."""
    used = [ipaddress.ip_network(s["subnet"], strict=False)
            for network in networks.values() for s in network.get("subnets") or []]
    return used + host_routes()


def host_routes() -> list:
    """IPv4 routes of the calling network namespace (/proc/net/route: little-endian hex)."""
    routes = []
    try:
        with open("/proc/net/route") as f:
            next(f, None)
            for line in f:
                fields = line.split()
                if len(fields) < 8:
                    continue
                destination = ipaddress.IPv4Address(int(fields[1], 16).to_bytes(4, "little"))
                mask = ipaddress.IPv4Address(int(fields[7], 16).to_bytes(4, "little"))
                if int(mask):  # the default route (0.0.0.0/0) would make every subnet "used"
                    routes.append(ipaddress.ip_network(f"{destination}/{mask}", strict=False))
    except (OSError, ValueError):
        pass
    return routes


def make_subnets(subnets: list[str], gateways: list[str], ip_ranges: list[str], used: list,
                 add_gateway: bool = True) -> list[dict]:
    """The `subnets` of a new network: the given ones checked (gateways and ranges inside, no overlap
    with `used`), or the first free /24 of podman's pools. Gateways and ranges match subnets by order."""
    if (gateways or ip_ranges) and not subnets:
        raise NetworkError("cannot set gateway or range without subnet")
    if len(gateways) > len(subnets) or len(ip_ranges) > len(subnets):
        raise NetworkError("cannot set more gateways or ranges than subnets")
    if not subnets:
        subnets = [str(free_subnet(used))]
    result = []
    for index, text in enumerate(subnets):
        try:
            subnet = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise NetworkError(f"subnet invalid: {text!r} is not an address/prefix such as 10.89.1.0/24") from None
        if subnet.num_addresses < 4:
            raise NetworkError(f"subnet {subnet} is too small: it needs room for a gateway and containers")
        if any(subnet.overlaps(other) for other in used if other.version == subnet.version):
            raise NetworkError(f"subnet {subnet} is already used on the host or by another config")
        entry: dict = {"subnet": str(subnet)}
        if index < len(gateways) and gateways[index]:
            gateway = _address(gateways[index], "gateway")
            if gateway not in subnet:
                raise NetworkError(f"gateway {gateway} not in subnet {subnet}")
            entry["gateway"] = str(gateway)
        elif add_gateway:
            entry["gateway"] = str(subnet.network_address + 1)
        if index < len(ip_ranges) and ip_ranges[index]:
            entry["lease_range"] = lease_range(ip_ranges[index], subnet)
        result.append(entry)
        used = used + [subnet]
    return result


def free_subnet(used: list):
    for pool, prefix in SUBNET_POOLS:
        for candidate in ipaddress.ip_network(pool).subnets(new_prefix=prefix):
            if not any(candidate.overlaps(other) for other in used if other.version == 4):
                return candidate
    raise NetworkError("could not find a free subnet in the default pools (10.89.0.0/16 to 10.128.0.0/9): "
                       "give one with --subnet")


def lease_range(text: str, subnet) -> dict:
    """--ip-range: a CIDR inside the subnet, or FIRST-LAST addresses."""
    if "-" in text:
        first, _, last = text.partition("-")
        start, end = _address(first, "ip range"), _address(last, "ip range")
    else:
        try:
            block = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise NetworkError(f"ip range {text!r} is neither a CIDR nor FIRST-LAST") from None
        start, end = block.network_address, block.broadcast_address
    for address in (start, end):
        if address not in subnet:
            raise NetworkError(f"lease range ip {address} not in subnet {subnet}")
    if int(start) > int(end):
        raise NetworkError(f"ip range {text}: the first address is after the last")
    return {"start_ip": str(start), "end_ip": str(end)}


def check_options(options: dict) -> dict:
    """The bridge options netavark 1.4 knows (podman checks them at create): mtu, vlan, isolate."""
    checked = {}
    for key, value in options.items():
        if key in ("mtu", "vlan"):
            if not str(value).isdigit():
                raise NetworkError(f"network option {key}={value}: not a number")
        elif key == "isolate":
            if str(value).lower() not in ("true", "false", "1", "0"):
                raise NetworkError(f"network option isolate={value}: not true or false")
            value = "true" if str(value).lower() in ("true", "1") else "false"
        else:
            raise NetworkError(f"unsupported bridge network option {key}")
        checked[key] = str(value)
    return checked


def _address(text: str, what: str):
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise NetworkError(f"{what} {text!r} is not an IP address") from None


def remove_network(paths, name_or_id: str) -> dict:
    """Remove a network's config (not the default one); the caller checks it is unused first."""
    with _locked(os.path.join(networks_dir(paths), ".lock")):
        network = get_network(paths, name_or_id)
        if network["name"] == DEFAULT_NETWORK:
            raise NetworkError(f"default network {DEFAULT_NETWORK} cannot be removed")
        try:
            os.unlink(os.path.join(networks_dir(paths), network["name"] + ".json"))
        except FileNotFoundError:
            pass
        return network


def network_users(paths, store=None) -> dict[str, set[str]]:
    """Container ids by network name: the containers set up on each (the IPAM record) and, with the
    store, the containers whose config or state names it (config["networks"], or the info of
    for_run kept as state["network"]), so that a stopped container's network is not pruned."""
    users: dict[str, set[str]] = {}
    for container_id, record in _read_record(paths)["containers"].items():
        for network in record.get("networks", {}):
            users.setdefault(network, set()).add(container_id)
    if store is not None:
        for row in store.query("SELECT id, config, state FROM containers"):
            for network in _networks_named(row["config"], row["state"]):
                users.setdefault(network, set()).add(row["id"])
    return users


def _networks_named(config_text: str, state_text: str) -> list[str]:
    names: list[str] = []
    for text, keys in ((config_text, ("networks",)), (state_text, ("network", "networks"))):
        try:
            document = json.loads(text or "{}")
        except ValueError:
            continue
        for key in keys:
            value = document.get(key) if isinstance(document, dict) else None
            if isinstance(value, dict) and "networks" in value:
                value = value["networks"]
            if isinstance(value, dict):
                names.extend(value)
            elif isinstance(value, list):
                names.extend(v for v in value if isinstance(v, str))
    return names


# --- port publishing ---------------------------------------------------------------------------

def parse_ports(specs: list[str]) -> list[dict]:
    """-p/--publish specs as netavark's port_mappings; a missing host port is chosen free here."""
    mappings = []
    for spec in specs:
        mappings.extend(parse_port(spec))
    return mappings


def parse_port(spec: str) -> list[dict]:
    """`[ip:][hostPort:]containerPort[/proto[,proto]]` (ranges as 8000-8009) as netavark's
    PortMapping dicts; host_port 0 means "choose a free one" (assign_free_ports)."""
    def invalid(why: str) -> NetworkError:
        return NetworkError(f"invalid port mapping {spec!r}: {why} "
                            f"(expected [ip:][hostPort:]containerPort[/tcp|udp|sctp])")

    text, _, protocols = spec.partition("/")
    protocol_list = [p.strip().lower() for p in protocols.split(",")] if protocols else ["tcp"]
    for protocol in protocol_list:
        if protocol not in PROTOCOLS:
            raise invalid(f"unknown protocol {protocol!r}")
    host_ip = ""
    if text.startswith("["):  # [IPv6]:hostPort:containerPort
        address, bracket, text = text[1:].partition("]")
        if not bracket or not text.startswith(":"):
            raise invalid("an IPv6 address needs the form [addr]:hostPort:containerPort")
        host_ip, text = address, text[1:]
        parts = [host_ip, *text.split(":")]
        if len(parts) != 3:
            raise invalid("an IPv6 address needs the form [addr]:hostPort:containerPort")
    else:
        parts = text.split(":")
    if len(parts) == 3:
        host_ip, host_text, container_text = parts
        if not host_ip:
            raise invalid("empty host IP")
        try:
            ipaddress.ip_address(host_ip)
        except ValueError:
            raise invalid(f"host IP {host_ip!r} is not an IP address") from None
    elif len(parts) == 2:
        host_text, container_text = parts
    elif len(parts) == 1:
        host_text, container_text = "", parts[0]
    else:
        raise invalid("too many colons")
    if not container_text:
        raise invalid("no container port")
    container_first, container_count = _port_range(container_text, "container port", invalid)
    if host_text:
        host_first, host_count = _port_range(host_text, "host port", invalid)
        if host_count != container_count:
            raise invalid(f"the host range has {host_count} ports, the container range {container_count}")
    else:
        host_first = 0
    return [{"host_ip": host_ip, "container_port": container_first, "host_port": host_first,
             "range": container_count, "protocol": protocol} for protocol in protocol_list]


def _port_range(text: str, what: str, invalid) -> tuple[int, int]:
    first_text, dash, last_text = text.partition("-")
    try:
        first = int(first_text)
        last = int(last_text) if dash else first
    except ValueError:
        raise invalid(f"{what} {text!r} is not a number or range") from None
    if not 1 <= first <= 65535 or not 1 <= last <= 65535:
        raise invalid(f"{what} {text} is outside 1-65535")
    if last < first:
        raise invalid(f"{what} range {text} ends before it starts")
    return first, last - first + 1


def _overlap(a: dict, b: dict) -> bool:
    """Whether two mappings claim a common host address, port and protocol."""
    if a["protocol"] != b["protocol"]:
        return False
    if a["host_ip"] and b["host_ip"] and a["host_ip"] != b["host_ip"]:
        return False
    return a["host_port"] < b["host_port"] + b["range"] and b["host_port"] < a["host_port"] + a["range"]


def check_port_conflicts(mappings: list[dict], published: list[dict]) -> None:
    """Each mapping against the others and against `published` (other containers' mappings)."""
    for index, mapping in enumerate(mappings):
        for other in mappings[:index] + published:
            if _overlap(mapping, other):
                raise NetworkError(f"port {_describe(mapping)} is already published"
                                   f"{' by another container' if other in published else ' twice'}")


def _describe(mapping: dict) -> str:
    last = mapping["host_port"] + mapping["range"] - 1
    port = str(mapping["host_port"]) + (f"-{last}" if mapping["range"] > 1 else "")
    return f"{mapping['host_ip'] or '0.0.0.0'}:{port}/{mapping['protocol']}"


def check_ports_free(mappings: list[dict]) -> None:
    """Each host port must not be bound by a process of the host (the namespace netavark runs in):
    its DNAT rule would take the port's traffic from it, silently. A host IP that is not an address
    of the host is refused too."""
    import socket

    for mapping in mappings:
        family = socket.AF_INET6 if ":" in mapping["host_ip"] else socket.AF_INET
        kind = socket.SOCK_DGRAM if mapping["protocol"] == "udp" else socket.SOCK_STREAM
        if mapping["protocol"] == "sctp":
            continue  # an SCTP socket needs the sctp module; netavark checks nothing either
        for port in range(mapping["host_port"], mapping["host_port"] + mapping["range"]):
            with socket.socket(family, kind) as probe:
                if kind == socket.SOCK_STREAM:  # a connection in TIME_WAIT does not hold the port; a listener does
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((mapping["host_ip"] or "0.0.0.0", port))
                except OSError as err:
                    address = f"{mapping['host_ip'] or '0.0.0.0'}:{port}/{mapping['protocol']}"
                    if err.errno == 98:  # EADDRINUSE
                        raise NetworkError(f"cannot publish {address}: the port is already in use on the host") from None
                    if err.errno == 99:  # EADDRNOTAVAIL
                        raise NetworkError(f"cannot publish {address}: {mapping['host_ip']} is not an address "
                                           f"of this host") from None
                    raise NetworkError(f"cannot publish {address}: {err.strerror}") from None


def reserve_ports(mappings: list[dict]) -> list[int]:
    """Hold each published host port with a socket of the caller's (podman gives them to conmon):
    a process that tries to bind the port later fails instead of losing its traffic to the DNAT
    rule. The fds are inheritable, for the monitor to keep until the container exits; TCP ones
    listen (a listener is what refuses others' SO_REUSEADDR binds) but never accept, as the
    traffic goes to the container before reaching them."""
    import socket

    fds: list[int] = []
    try:
        for mapping in mappings:
            if mapping["protocol"] not in ("tcp", "udp"):
                continue
            family = socket.AF_INET6 if ":" in mapping["host_ip"] else socket.AF_INET
            kind = socket.SOCK_DGRAM if mapping["protocol"] == "udp" else socket.SOCK_STREAM
            for port in range(mapping["host_port"], mapping["host_port"] + mapping["range"]):
                sock = socket.socket(family, kind)
                try:
                    sock.bind((mapping["host_ip"] or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
                    if kind == socket.SOCK_STREAM:
                        sock.listen(1)
                except OSError as err:
                    sock.close()
                    raise NetworkError(f"cannot hold {mapping['host_ip'] or '0.0.0.0'}:{port}/"
                                       f"{mapping['protocol']}: {err.strerror}") from None
                fd = sock.detach()
                os.set_inheritable(fd, True)
                fds.append(fd)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def assign_free_ports(mappings: list[dict]) -> list[dict]:
    """A host port for every mapping without one: a port the kernel says is free now."""
    import socket

    assigned = []
    for mapping in mappings:
        if mapping["host_port"] == 0:
            if mapping["range"] != 1:
                raise NetworkError(f"a container port range ({mapping['container_port']}, "
                                   f"{mapping['range']} ports) needs a host port range")
            family = socket.AF_INET6 if ":" in mapping["host_ip"] else socket.AF_INET
            kind = socket.SOCK_DGRAM if mapping["protocol"] == "udp" else socket.SOCK_STREAM
            with socket.socket(family, kind) as probe:
                probe.bind((mapping["host_ip"] or "0.0.0.0", 0))
                mapping = dict(mapping, host_port=probe.getsockname()[1])
        assigned.append(mapping)
    return assigned


# --- IPAM and the per-container record ---------------------------------------------------------

@contextmanager
def _locked(lock_path: str):
    import fcntl

    os.makedirs(os.path.dirname(lock_path), mode=0o700, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _record_path(paths) -> str:
    return os.path.join(run_dir(paths), "ipam.json")


def _read_record(paths) -> dict:
    try:
        with open(_record_path(paths)) as f:
            record = json.load(f)
    except FileNotFoundError:
        record = {}
    except ValueError as err:
        raise NetworkError(f"the address record {_record_path(paths)} is corrupt ({err}): stop the "
                           f"containers with networks and remove it") from None
    record.setdefault("last", {})
    record.setdefault("containers", {})
    return record


def _write_json(path: str, document: dict) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as f:
        json.dump(document, f, indent=5)
        f.write("\n")
    os.rename(temporary, path)


def allocate(record: dict, network: dict, container_id: str, static_ips: list[str] = ()) -> list[str]:
    """Addresses for a container on `network`, one per subnet (or the static ones, checked free),
    recorded in `record` (ipam.json's content) as podman's IPAM db records them."""
    in_use = {address for c in record["containers"].values() for addresses in c.get("networks", {}).values()
              for address in addresses}
    addresses = []
    for subnet_entry in network.get("subnets") or []:
        subnet = ipaddress.ip_network(subnet_entry["subnet"])
        static = [ip for ip in static_ips if ipaddress.ip_address(ip) in subnet]
        if static:
            address = static[0]
            if address in in_use or address == subnet_entry.get("gateway") \
                    or ipaddress.ip_address(address) in (subnet.network_address, subnet.broadcast_address):
                raise NetworkError(f"IPAM error: requested ip address {address} is already allocated "
                                   f"to another container on network {network['name']}")
        else:
            address = _next_free(record, network["name"], subnet_entry, subnet, in_use)
        addresses.append(address)
        in_use.add(address)
    for ip in static_ips:
        if ip not in addresses:
            raise NetworkError(f"requested static ip {ip} not in any subnet on network {network['name']}")
    return addresses


def _next_free(record: dict, network_name: str, subnet_entry: dict, subnet, in_use: set[str]) -> str:
    """The next address after the last one given in this subnet, wrapping round (podman's ipam.go:
    an address freed is not given again at once)."""
    lease = subnet_entry.get("lease_range") or {}
    first = int(ipaddress.ip_address(lease["start_ip"])) if lease.get("start_ip") else int(subnet.network_address) + 1
    last = int(ipaddress.ip_address(lease["end_ip"])) if lease.get("end_ip") else int(subnet.broadcast_address) - 1
    if subnet.version == 6 and not lease.get("end_ip"):
        last = int(subnet.broadcast_address)  # IPv6 has no broadcast address
    key = f"{network_name} {subnet}"
    previous = record["last"].get(key)
    start = int(ipaddress.ip_address(previous)) + 1 if previous else first
    if not first <= start <= last:
        start = first
    count = last - first + 1
    gateway = subnet_entry.get("gateway")
    for step in range(count):
        candidate = first + (start - first + step) % count
        text = str(ipaddress.ip_address(candidate))
        if text not in in_use and text != gateway:
            record["last"][key] = text
            return text
    raise NetworkError(f"IPAM error: failed to find free IP in range {subnet} of network {network_name}: "
                       f"every address is in use")


# --- netavark ----------------------------------------------------------------------------------

def helper(name: str) -> str:
    """netavark or aardvark-dns, where podman finds them (CAPSA_NETAVARK/CAPSA_AARDVARK override)."""
    override = os.environ.get("CAPSA_NETAVARK" if name == "netavark" else "CAPSA_AARDVARK")
    if override:
        return override
    for directory in HELPER_DIRS:
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return ""


def _netavark(paths, command: str, netns: str, options: dict) -> dict:
    """Run `netavark setup|teardown NETNS` with the options on stdin; its JSON answer. Its error
    (a JSON {"error": ...} on stdout, podman's reading of it) becomes a NetworkError."""
    binary = helper("netavark")
    if not binary:
        raise NetworkError(f"netavark is not installed (looked in {', '.join(HELPER_DIRS)}): install it "
                           f"(Debian: apt-get install netavark) or use --network none or host")
    argv = [binary, "--config", run_dir(paths), "--rootless=false"]
    aardvark = helper("aardvark-dns")
    if aardvark:
        argv.append(f"--aardvark-binary={aardvark}")
    os.makedirs(run_dir(paths), mode=0o700, exist_ok=True)
    # stdin: /dev/null for aardvark-dns, which netavark starts and which outlives this call, is
    # given by netavark itself; its output is ours to read (aardvark keeps none of the pipes).
    result = subprocess.run(argv + [command, netns], input=json.dumps(options), capture_output=True, text=True,
                            env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn")))
    if result.returncode != 0:
        try:
            message = json.loads(result.stdout)["error"]
        except (ValueError, KeyError, TypeError):
            message = (result.stderr.strip() or result.stdout.strip() or f"exit status {result.returncode}")
        raise NetworkError(f"netavark ({command}): {message}")
    if command != "setup":
        return {}
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise NetworkError(f"netavark (setup) answered no JSON: {result.stdout[:200]!r}") from None


def _network_options(container_id: str, name: str, networks: dict[str, dict], record: dict) -> dict:
    """netavark's NetworkOptions: per network the interface, addresses and DNS aliases."""
    per_network = {}
    for index, network_name in enumerate(record["networks"]):
        per_network[network_name] = {"interface_name": record["interfaces"].get(network_name, f"eth{index}"),
                                     "static_ips": record["networks"][network_name],
                                     "aliases": record["aliases"].get(network_name, [])}
    options = {"container_id": container_id, "container_name": name, "networks": per_network,
               "network_info": {n: networks[n] for n in record["networks"]},
               "port_mappings": record.get("ports") or None}
    return options


def normalize_networks(networks) -> dict[str, dict]:
    """`networks` as {name: {static_ips, aliases, interface_name}}: a list of names is accepted."""
    if isinstance(networks, str):
        networks = [n for n in networks.split(",") if n]
    if isinstance(networks, (list, tuple)):
        networks = {name: {} for name in networks}
    return {name: dict(options or {}) for name, options in networks.items()}


def setup(paths, container_id: str, name: str, netns_path: str, networks, port_mappings: list[dict] = ()) -> dict:
    """Attach the namespace at `netns_path` to `networks` (names, or {name: {static_ips, aliases,
    interface_name}}) and publish `port_mappings` (parse_ports' dicts): addresses allocated,
    netavark setup run; its status, by network: {"interfaces": {"eth0": {"mac_address",
    "subnets": [{"ipnet", "gateway"}]}}, "dns_server_ips", "dns_search_domains"}."""
    if os.geteuid() != 0:
        raise NetworkError("bridge networks need root (netavark; capsactl has no slirp4netns): "
                           "use --network none or --network host")
    wanted = normalize_networks(networks)
    if not wanted:
        raise NetworkError("no network to set up")
    with _locked(os.path.join(run_dir(paths), "ipam.lock")):
        known = load_networks(paths)
        record = _read_record(paths)
        if container_id in record["containers"]:
            raise NetworkError(f"the network of container {container_id[:12]} is already set up: tear it down first")
        entry = {"name": name, "netns": netns_path, "networks": {}, "aliases": {}, "interfaces": {}}
        for index, (network_name, options) in enumerate(wanted.items()):
            network = get_network(paths, network_name, known)
            known[network["name"]] = network
            static = [str(_address(ip, "static ip")) for ip in options.get("static_ips") or []]
            entry["networks"][network["name"]] = allocate(record, network, container_id, static)
            aliases = list(options.get("aliases") or [])
            aliases = list(dict.fromkeys([container_id[:12], *aliases]))  # podman: the short id, always
            entry["aliases"][network["name"]] = aliases
            entry["interfaces"][network["name"]] = options.get("interface_name") or f"eth{index}"
        published = [p for c in record["containers"].values() for p in c.get("ports") or []]
        mappings = assign_free_ports([dict(m) for m in port_mappings])
        check_port_conflicts(mappings, published)
        check_ports_free(mappings)
        entry["ports"] = mappings
        entry["network_info"] = {n: known[n] for n in entry["networks"]}
        status = _netavark(paths, "setup", netns_path, _network_options(container_id, name, known, entry))
        entry["status"] = status
        # recorded after netavark succeeded: a failed setup leaves no address taken
        record["containers"][container_id] = entry
        _write_json(_record_path(paths), record)
        return status


def teardown(paths, container_id: str, netns_path: str | None = None) -> bool:
    """Undo setup: netavark teardown (interfaces, firewall rules, DNS entries) and the addresses
    freed, even when netavark fails (as podman: an address must not stay taken forever). False if
    the container had nothing set up. A namespace already gone leaves only the host side to clean."""
    with _locked(os.path.join(run_dir(paths), "ipam.lock")):
        record = _read_record(paths)
        entry = record["containers"].get(container_id)
        if entry is None:
            return False
        # the configs it was set up with: a network removed since (rm -f) is still torn down
        known = entry.get("network_info") or load_networks(paths)
        namespace = netns_path or entry.get("netns") or ""
        error = None
        try:
            _netavark(paths, "teardown", namespace, _network_options(container_id, entry["name"], known, entry))
        except NetworkError as err:
            error = err
        del record["containers"][container_id]
        _write_json(_record_path(paths), record)
    if error is not None:
        raise error
    return True


def container_record(paths, container_id: str) -> dict | None:
    """What setup recorded for a container (networks, addresses, ports, netavark's status), or None."""
    return _read_record(paths)["containers"].get(container_id)


# --- what run/create call ------------------------------------------------------------------------

def forget_after_reboot(paths) -> None:
    """After a reboot no namespace, interface or aardvark-dns of before exists: the record of
    addresses and the namespace files (plain files now, if the run root is not a tmpfs) go.
    For store.refresh_after_reboot: `lambda db: network.forget_after_reboot(paths)`."""
    import shutil

    with _locked(os.path.join(run_dir(paths), "ipam.lock")):
        for path in (_record_path(paths), os.path.join(run_dir(paths), "aardvark-dns")):
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.exists(path):
                os.unlink(path)
    from capsa.manager import netns

    try:
        names = os.listdir(netns.netns_dir(paths))
    except FileNotFoundError:
        names = []
    for name in names:
        netns.remove_netns(os.path.join(netns.netns_dir(paths), name))


def default_network_mode() -> str:
    """podman's default: the bridge for root; without root capsactl has no user-mode networking."""
    return "bridge" if os.geteuid() == 0 else "none"


def for_run(paths, container_id: str, name: str, network_mode: str | None, ports: list[str] = ()) -> tuple:
    """The network of a new container (see the module's docstring): (netns path or None, info)."""
    mode = network_mode or default_network_mode()
    mappings = parse_ports(list(ports))
    if mode in ("none", "host") or mode.startswith("ns:") or mode.startswith("container:"):
        if mappings:
            raise NetworkError(f"-p/--publish needs a bridge network: --network {mode} has none to publish on")
        if mode.startswith("ns:"):
            return mode[3:], {"mode": "ns", "netns": mode[3:], "networks": [], "ports": [], "status": {}}
        return None, {"mode": mode, "netns": None, "networks": [], "ports": [], "status": {}}
    if mode in ("slirp4netns", "pasta", "private"):
        raise NetworkError(f"--network {mode} is not supported by capsactl: use bridge, a network's name, "
                           f"none or host")
    names = [DEFAULT_NETWORK if n == "bridge" else n for n in mode.split(",") if n]
    for network_name in names:  # before anything is made: an unknown network is a clear error
        get_network(paths, network_name)
    from capsa.manager import netns

    path = netns.create_netns(paths, container_id)
    try:
        status = setup(paths, container_id, name, path, names, mappings)
    except BaseException:
        netns.remove_netns(path)
        raise
    record = container_record(paths, container_id) or {}
    return path, {"mode": "bridge", "netns": path, "networks": list(record.get("networks", names)),
                  "ports": record.get("ports", []), "aliases": record.get("aliases", {}), "status": status}


def cleanup(paths, container_id: str, info: dict | None = None) -> None:
    """Undo for_run: teardown (if set up) and the namespace file removed. Safe to call twice."""
    from capsa.manager import netns

    path = (info or {}).get("netns") or netns.netns_path(paths, container_id)
    try:
        teardown(paths, container_id, path)
    finally:
        if (info or {}).get("mode", "bridge") == "bridge":
            netns.remove_netns(path)


def resolv_conf(info: dict, host_resolv: str = "/etc/resolv.conf") -> str:
    """A container's /etc/resolv.conf: aardvark-dns (the gateways of DNS-enabled networks) first
    with search dns.podman, then the host's servers (not 127.x: unreachable from the container)."""
    servers, search = [], []
    for block in (info.get("status") or {}).values():
        servers.extend(block.get("dns_server_ips") or [])
        search.extend(block.get("dns_search_domains") or [])
    host_servers, host_search, host_options = [], [], []
    try:
        with open(host_resolv) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 2 and fields[0] == "nameserver" and not fields[1].startswith("127."):
                    host_servers.append(fields[1])
                elif fields and fields[0] == "search":
                    host_search.extend(fields[1:])
                elif fields and fields[0] == "options":
                    host_options.extend(fields[1:])
    except OSError:
        pass
    lines = []
    all_search = list(dict.fromkeys(search + host_search))
    if all_search:
        lines.append("search " + " ".join(all_search))
    lines.extend(f"nameserver {s}" for s in dict.fromkeys(servers + host_servers))
    if host_options:
        lines.append("options " + " ".join(host_options))
    return "\n".join(lines) + "\n"


def hosts_entries(info: dict, *names: str) -> str:
    """/etc/hosts lines for a bridged container, as podman writes them: the gateway as
    host.containers.internal (podman's name for the host), then its addresses with its names
    (hostname, container name)."""
    lines = []
    addresses, gateways = [], []
    for block in (info.get("status") or {}).values():
        for interface in (block.get("interfaces") or {}).values():
            for subnet in interface.get("subnets") or []:
                addresses.append(subnet["ipnet"].split("/")[0])
                if subnet.get("gateway"):
                    gateways.append(subnet["gateway"])
    if gateways:
        lines.append(f"{gateways[0]}\thost.containers.internal")
    shown = " ".join(dict.fromkeys(n for n in names if n))
    lines.extend(f"{address}\t{shown}" for address in addresses)
    return "".join(line + "\n" for line in lines)


_ENDPOINT = {"EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "",
             "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "MacAddress": ""}


def inspect_settings(info: dict | None) -> dict:
    """podman's NetworkSettings (container inspect) from for_run's info: the first network's
    address at the top, each network's under Networks, published ports under Ports."""
    info = info or {}
    settings = dict(_ENDPOINT, Bridge="", SandboxID="", HairpinMode=False, LinkLocalIPv6Address="",
                    LinkLocalIPv6PrefixLen=0, Ports=ports_by_container_port(info.get("ports") or []),
                    SandboxKey=info.get("netns") or "")
    networks = {}
    for network_name, block in (info.get("status") or {}).items():
        endpoint = dict(_ENDPOINT, NetworkID=network_name, DriverOpts=None, IPAMConfig=None, Links=None,
                        Aliases=list((info.get("aliases") or {}).get(network_name, [])))
        for interface in (block.get("interfaces") or {}).values():
            endpoint["MacAddress"] = interface.get("mac_address", "")
            for subnet in interface.get("subnets") or []:
                address, _, prefix = subnet["ipnet"].partition("/")
                if ":" in address:
                    endpoint.update(GlobalIPv6Address=address, GlobalIPv6PrefixLen=int(prefix),
                                    IPv6Gateway=subnet.get("gateway") or "")
                else:
                    endpoint.update(IPAddress=address, IPPrefixLen=int(prefix), Gateway=subnet.get("gateway") or "")
        networks[network_name] = endpoint
    if networks:
        first = next(iter(networks.values()))
        settings.update({key: first[key] for key in _ENDPOINT})
    settings["Networks"] = networks
    return settings


def ports_by_container_port(mappings: list[dict]) -> dict:
    """{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}: inspect's Ports, one key per port of a range."""
    ports: dict = {}
    for mapping in mappings:
        for offset in range(mapping["range"]):
            key = f"{mapping['container_port'] + offset}/{mapping['protocol']}"
            ports.setdefault(key, []).append({"HostIp": mapping["host_ip"],
                                              "HostPort": str(mapping["host_port"] + offset)})
    return ports


def ports_text(mappings: list[dict]) -> str:
    """`ps`'s PORTS column: 0.0.0.0:8080->80/tcp, 127.0.0.1:8000-8001->80-81/tcp."""
    shown = []
    for m in mappings:
        host, container = str(m["host_port"]), str(m["container_port"])
        if m["range"] > 1:
            host += f"-{m['host_port'] + m['range'] - 1}"
            container += f"-{m['container_port'] + m['range'] - 1}"
        shown.append(f"{m['host_ip'] or '0.0.0.0'}:{host}->{container}/{m['protocol']}")
    return ", ".join(shown)
