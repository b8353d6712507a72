"""Bridge networks through netavark and aardvark-dns (capsa.manager.network, capsactl network ...).

Everything runs in a network namespace of the test's own that plays the host: capsactl, netavark
(bridge, veth pairs, iptables rules, ip_forward) and aardvark-dns live there, so nothing touches
the machine's interfaces or firewall, and the test reaches only its own addresses. Containers are
capsa containers made from bundles whose network namespace is the one for_run made and set up.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import Bundle

NETAVARK = "/usr/lib/podman/netavark"

# The library, called in the test's namespace: `python -c CALL function json-args` prints the result.
CALL = (
    "import json, sys\n"
    "from capsa.manager import network\n"
    "from capsa.manager.paths import Paths\n"
    "args = json.loads(sys.argv[2])\n"
    "paths = Paths(*args.pop(0))\n"
    "print(json.dumps(getattr(network, sys.argv[1])(paths, *args)))\n"
)
FETCH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode(), end='')"
LISTEN = (
    "import socket, sys\n"
    "server = socket.create_server((sys.argv[1], int(sys.argv[2])))\n"
    "print('listening', flush=True)\n"
    "connection = server.accept()[0]\n"
    "print(connection.makefile().read(), end='')\n"
)


@pytest.fixture
def host_netns():
    """A network namespace that is the "host" of the test's bridges; deleting it removes all."""
    for tool in ("nsenter", "ip", "iptables"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is needed for the bridge tests")
    if not os.path.exists(NETAVARK):
        pytest.skip("netavark (podman's network backend) is not installed")
    name = f"capsa-net-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    path = f"/run/netns/{name}"
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        probe = subprocess.run(["nsenter", f"--net={path}", "iptables", "-t", "nat", "-L", "-n"],
                               capture_output=True, text=True)
        if probe.returncode != 0:
            pytest.skip(f"iptables cannot make NAT rules on this kernel (netavark needs them): {probe.stderr.strip()}")
        yield path
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


class Host:
    """Commands in the test's namespace: capsactl, library calls, anything else."""

    def __init__(self, netns: str, base):
        self.netns = netns
        self.paths = [str(base / "graph"), str(base / "run"), str(base / "state")]
        self.capsactl_path = os.path.join(os.path.dirname(sys.executable), "capsactl")

    def run(self, *argv: str, check: bool = True, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        result = subprocess.run(["nsenter", f"--net={self.netns}", *argv], capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL, **kwargs)
        if check and result.returncode != 0:
            raise AssertionError(f"{argv} exited {result.returncode}: {result.stderr}")
        return result

    def capsactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(self.capsactl_path, "--root", self.paths[0], "--runroot", self.paths[1], *args, check=check)

    def call(self, function: str, *args, check: bool = True):
        result = self.run(sys.executable, "-c", CALL, function, json.dumps([self.paths, *args]), check=check)
        return json.loads(result.stdout) if result.returncode == 0 else result

    def iptables(self) -> str:
        return self.run("iptables", "-S").stdout + self.run("iptables", "-t", "nat", "-S").stdout


@pytest.fixture
def host(host_netns, tmp_path):
    host = Host(host_netns, tmp_path)
    yield host
    # a test that failed half-way leaves no namespace mounted under its tmp_path
    from capsa.manager import netns

    directory = os.path.join(host.paths[1], "netns")
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        netns.remove_netns(os.path.join(directory, name))


def bridged_bundle(tmp_path, rootfs_template, name: str, netns: str, info: dict, *args: str) -> Bundle:
    """A bundle whose container joins `netns`, with resolv.conf and hosts as the manager makes them."""
    from capsa.manager import network

    bundle = Bundle(str(tmp_path / name), rootfs_template, str(tmp_path / "capsa-state"))
    namespaces = bundle.config["linux"]["namespaces"]
    for namespace in namespaces:
        if namespace["type"] == "network":
            namespace["path"] = netns
    bundle.config["hostname"] = name
    etc = os.path.join(bundle.rootfs, "etc")
    with open(os.path.join(etc, "resolv.conf"), "w") as f:
        f.write(network.resolv_conf(info, "/dev/null"))
    with open(os.path.join(etc, "hosts"), "w") as f:
        f.write("127.0.0.1\tlocalhost\n" + network.hosts_entries(info, name))
    bundle.set_args(*args)
    return bundle


def address_of(info: dict) -> tuple[str, str]:
    """The container's address and its gateway, from netavark's status."""
    (block,) = info["status"].values()
    (interface,) = block["interfaces"].values()
    (subnet,) = interface["subnets"]
    return subnet["ipnet"].split("/")[0], subnet["gateway"]


def test_bridge_dns_published_port_and_teardown(host, tmp_path, rootfs_template):
    assert host.capsactl("network", "create", "n1").stdout == "n1\n"
    web_id, client_id = "a1" * 32, "b2" * 32
    web_netns, web = host.call("for_run", web_id, "web", "n1", ["18080:80"])
    client_netns, client = host.call("for_run", client_id, "client", "n1", [])
    assert web_netns == os.path.join(host.paths[1], "netns", f"netns-{web_id}") and os.path.exists(web_netns)
    web_ip, gateway = address_of(web)
    client_ip, _ = address_of(client)
    assert web_ip.startswith("10.89.0.") and client_ip != web_ip and gateway == "10.89.0.1"
    assert web["ports"] == [{"host_ip": "", "container_port": 80, "host_port": 18080, "range": 1, "protocol": "tcp"}]
    # in use: rm refuses (podman's exit code 2) and ls still lists it
    refused = host.capsactl("network", "rm", "n1", check=False)
    assert refused.returncode == 2 and "has associated containers" in refused.stderr

    listener = None
    bundles = []
    try:
        web_bundle = bridged_bundle(tmp_path, rootfs_template, "web", web_netns, web,
                                    "httpd", "-f", "-p", "80", "-h", "/www")
        os.makedirs(os.path.join(web_bundle.rootfs, "www"))
        with open(os.path.join(web_bundle.rootfs, "www", "pong"), "w") as f:
            f.write("pong\n")
        bundles.append((web_bundle, "web"))
        web_bundle.detached("run", "-d", "--bundle", web_bundle.path, "web")
        client_bundle = bridged_bundle(tmp_path, rootfs_template, "client", client_netns, client, "sleep", "300")
        bundles.append((client_bundle, "client"))
        client_bundle.detached("run", "-d", "--bundle", client_bundle.path, "client")

        inside = web_bundle.capsa("exec", "web", "sh", "-c", "ip -4 -o addr show eth0; ip route").stdout
        assert f"inet {web_ip}/24" in inside and f"default via {gateway} dev eth0" in inside, inside

        # the container reaches the gateway: a listener of the test's namespace on the bridge's address
        listener = subprocess.Popen(["nsenter", f"--net={host.netns}", sys.executable, "-c", LISTEN, gateway, "19999"],
                                    stdout=subprocess.PIPE, text=True)
        assert listener.stdout.readline() == "listening\n"
        client_bundle.capsa("exec", "client", "sh", "-c", f"echo from-client | nc {gateway} 19999")
        assert listener.communicate(timeout=10)[0] == "from-client\n"

        # the second container finds the first by name through aardvark-dns (the gateway, port 53)
        lookup = client_bundle.capsa("exec", "client", "nslookup", "web").stdout
        assert web_ip in lookup, lookup
        fetched = client_bundle.capsa("exec", "client", "wget", "-q", "-O", "-", "http://web/pong")
        assert fetched.stdout == "pong\n"

        # the published port answers in the test's namespace (netavark's DNAT to web:80)
        assert host.run(sys.executable, "-c", FETCH, f"http://{gateway}:18080/pong").stdout == "pong\n"
    finally:
        if listener and listener.poll() is None:
            listener.kill()
            listener.wait()
        for bundle, cid in bundles:
            bundle.capsa("delete", "--force", cid, check=False)
        host.call("cleanup", client_id, client, check=False)
        host.call("cleanup", web_id, web, check=False)

    # nothing left: no namespace file, no interface but lo, no rule or chain of the network or its
    # containers, no address recorded, aardvark-dns's entry gone; the network can now be removed
    assert os.listdir(os.path.join(host.paths[1], "netns")) == []
    assert host.run("ip", "-o", "link").stdout.split(": ")[1::2][:1] == ["lo"]
    assert len(host.run("ip", "-o", "link").stdout.splitlines()) == 1
    rules = host.iptables()
    assert web_id not in rules and "10.89.0." not in rules, rules
    # netavark keeps its shared chains (NETAVARK-HOSTPORT-*, NETAVARK_FORWARD) as podman's do; none of
    # the network's own (NETAVARK-<hash>, NETAVARK-DN-<hash>) is left
    own = [line for line in rules.splitlines() if line.startswith("-N NETAVARK-")
           and not line.startswith(("-N NETAVARK-HOSTPORT-", "-N NETAVARK_"))]
    assert own == [], rules
    assert host.call("container_record", web_id) is None
    assert not os.path.exists(os.path.join(host.paths[1], "networks", "aardvark-dns", "n1"))
    assert host.capsactl("network", "rm", "n1").stdout == "n1\n"


def test_port_in_use_is_refused_and_leaves_nothing(host):
    # a process of the host listens on the port: the DNAT rule would steal its traffic
    listener = subprocess.Popen(["nsenter", f"--net={host.netns}", sys.executable, "-c", LISTEN, "0.0.0.0", "18081"],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout.readline() == "listening\n"
        failed = host.call("for_run", "c3" * 32, "c3", "bridge", ["18081:80"], check=False)
        assert failed.returncode != 0 and "0.0.0.0:18081/tcp: the port is already in use on the host" in failed.stderr
    finally:
        listener.kill()
        listener.wait()
    assert os.listdir(os.path.join(host.paths[1], "netns")) == []
    assert host.call("container_record", "c3" * 32) is None
    assert len(host.run("ip", "-o", "link").stdout.splitlines()) == 1


def test_none_and_host_modes_make_no_namespace(host):
    assert host.call("for_run", "d4" * 32, "d4", "none", [])[0] is None
    assert host.call("for_run", "d4" * 32, "d4", "host", [])[0] is None
    assert not os.path.exists(os.path.join(host.paths[1], "netns"))
    bad = host.call("for_run", "d4" * 32, "d4", "none", ["80"], check=False)
    assert bad.returncode != 0 and "-p/--publish needs a bridge network" in bad.stderr



def test_parallel_setups_get_distinct_addresses(host):
    # four capsactl processes set up containers at once: the address record's lock keeps them apart
    ids = [f"{n}e" * 32 for n in range(4)]
    calls = [subprocess.Popen(["nsenter", f"--net={host.netns}", sys.executable, "-c", CALL, "for_run",
                               json.dumps([host.paths, cid, f"p{n}", "bridge", []])],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n, cid in enumerate(ids)]
    results = [call.communicate(timeout=60) + (call.returncode,) for call in calls]
    infos = [json.loads(out)[1] if code == 0 else {} for out, _, code in results]
    try:
        assert [code for _, _, code in results] == [0] * 4, [err for _, err, _ in results]
        addresses = [address_of(info)[0] for info in infos]
        assert len(set(addresses)) == 4 and all(a.startswith("10.88.0.") for a in addresses), addresses
        assert "podman0" in host.run("ip", "-o", "link").stdout
    finally:
        for cid, info in zip(ids, infos, strict=True):
            host.call("cleanup", cid, info, check=False)
    assert len(host.run("ip", "-o", "link").stdout.splitlines()) == 1
    assert os.listdir(os.path.join(host.paths[1], "netns")) == []


def test_network_commands_as_podmans(host):
    assert host.capsactl("network", "ls").stdout == "NETWORK ID    NAME        DRIVER\n2f259bab93aa  podman      bridge\n"
    host.capsactl("network", "create", "--subnet", "10.77.0.0/24", "--internal", "--label", "team=a", "lab")
    host.capsactl("network", "create", "--disable-dns", "plain")
    (lab,) = json.loads(host.capsactl("network", "inspect", "lab").stdout)
    assert list(lab) == ["name", "id", "driver", "network_interface", "created", "subnets", "ipv6_enabled",
                         "internal", "dns_enabled", "labels", "ipam_options"]
    assert lab["subnets"] == [{"subnet": "10.77.0.0/24", "gateway": "10.77.0.1"}] and lab["internal"]
    with open(os.path.join(host.paths[0], "networks", "lab.json")) as f:
        assert json.load(f) == lab
    assert host.capsactl("network", "ls", "-q", "--filter", "label=team=a").stdout == "lab\n"
    assert host.capsactl("network", "ls", "--format", "{{.Name}} {{.DNSEnabled}}").stdout == \
        "lab true\nplain false\npodman false\n"
    assert host.capsactl("network", "exists", "lab").returncode == 0
    assert host.capsactl("network", "exists", "nosuch", check=False).returncode == 1
    missing = host.capsactl("network", "rm", "nosuch", check=False)
    assert missing.returncode == 1 and "unable to find network with name or ID nosuch" in missing.stderr
    taken = host.capsactl("network", "create", "--subnet", "10.77.0.128/25", "again", check=False)
    assert taken.returncode == 125 and "subnet 10.77.0.128/25 is already used" in taken.stderr
    assert host.capsactl("network", "prune", "-f").stdout.split() == ["lab", "plain"]
    assert host.capsactl("network", "ls", "-q").stdout == "podman\n"
