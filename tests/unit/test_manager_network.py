"""Networks' pure logic (capsa.manager.network): port specs, subnets, IPAM, configs, resolv.conf."""

import ipaddress
import json

import pytest

from capsa.manager import network
from capsa.manager.network import NetworkError, NoSuchNetwork
from capsa.manager.paths import Paths


@pytest.fixture
def paths(tmp_path):
    return Paths(str(tmp_path / "graph"), str(tmp_path / "run"), str(tmp_path / "state"))


def mapping(host_ip="", host_port=0, container_port=0, count=1, protocol="tcp"):
    return {"host_ip": host_ip, "container_port": container_port, "host_port": host_port, "range": count,
            "protocol": protocol}


@pytest.mark.parametrize("spec, expected", [
    ("80", [mapping(container_port=80)]),
    ("8080:80", [mapping(host_port=8080, container_port=80)]),
    ("8080:80/udp", [mapping(host_port=8080, container_port=80, protocol="udp")]),
    ("127.0.0.1:8080:80", [mapping("127.0.0.1", 8080, 80)]),
    ("127.0.0.1::80", [mapping("127.0.0.1", 0, 80)]),
    ("[::1]:8080:80", [mapping("::1", 8080, 80)]),
    ("8000-8002:9000-9002", [mapping(host_port=8000, container_port=9000, count=3)]),
    ("53:53/tcp,udp", [mapping(host_port=53, container_port=53), mapping(host_port=53, container_port=53,
                                                                          protocol="udp")]),
])
def test_port_specs(spec, expected):
    assert network.parse_port(spec) == expected


@pytest.mark.parametrize("spec, problem", [
    ("", "no container port"), ("8080:", "no container port"), ("x:80", "host port 'x' is not a number"),
    ("80/icmp", "unknown protocol 'icmp'"), ("70000:80", "outside 1-65535"), ("0:80", "outside 1-65535"),
    ("1.2.3:80:80", "host IP '1.2.3' is not an IP address"), ("a:b:c:d", "too many colons"),
    ("8000-8001:80", "the host range has 2 ports, the container range 1"), ("90-80", "ends before it starts"),
    ("[::1]8080:80", "IPv6 address needs the form"),
])
def test_bad_port_specs_name_the_problem(spec, problem):
    with pytest.raises(NetworkError, match="invalid port mapping") as err:
        network.parse_port(spec)
    assert problem in str(err.value)


def test_port_conflicts_between_mappings_and_with_other_containers():
    network.check_port_conflicts([mapping("", 80, 80), mapping("", 80, 80, protocol="udp")], [])
    network.check_port_conflicts([mapping("127.0.0.1", 80, 80)], [mapping("127.0.0.2", 80, 80)])
    with pytest.raises(NetworkError, match="0.0.0.0:80/tcp is already published twice"):
        network.check_port_conflicts([mapping("", 80, 80), mapping("", 80, 81)], [])
    with pytest.raises(NetworkError, match="127.0.0.1:8001/tcp is already published by another container"):
        network.check_port_conflicts([mapping("127.0.0.1", 8001, 80)], [mapping("", 8000, 9000, count=3)])


def test_a_port_bound_on_the_host_is_refused():
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(NetworkError, match=f"127.0.0.1:{port}/tcp: the port is already in use"):
            network.check_ports_free([mapping("127.0.0.1", port, 80)])
    with pytest.raises(NetworkError, match="192.0.2.1 is not an address of this host"):
        network.check_ports_free([mapping("192.0.2.1", port, 80)])
    assigned = network.assign_free_ports([mapping("127.0.0.1", 0, 80)])
    assert assigned[0]["host_port"] > 0 and assigned[0]["container_port"] == 80


def test_subnets_given_checked_and_chosen_free():
    used = [ipaddress.ip_network("10.88.0.0/16"), ipaddress.ip_network("10.89.0.0/24")]
    assert network.make_subnets([], [], [], used) == [{"subnet": "10.89.1.0/24", "gateway": "10.89.1.1"}]
    assert network.make_subnets(["10.5.0.7/24"], ["10.5.0.254"], [], used) == \
        [{"subnet": "10.5.0.0/24", "gateway": "10.5.0.254"}]
    assert network.make_subnets(["10.5.0.0/24"], [], [], used, add_gateway=False) == [{"subnet": "10.5.0.0/24"}]
    assert network.make_subnets(["10.5.0.0/24"], [], ["10.5.0.128/25"], used)[0]["lease_range"] == \
        {"start_ip": "10.5.0.128", "end_ip": "10.5.0.255"}
    for args, problem in [((["10.89.0.0/16"], [], []), "subnet 10.89.0.0/16 is already used"),
                          ((["10.6.0.0/24"], ["10.7.0.1"], []), "gateway 10.7.0.1 not in subnet 10.6.0.0/24"),
                          (([], ["10.7.0.1"], []), "cannot set gateway or range without subnet"),
                          ((["nonsense"], [], []), "subnet invalid"),
                          ((["10.6.0.0/24"], [], ["10.7.0.0/25"]), "lease range ip 10.7.0.0 not in subnet")]:
        with pytest.raises(NetworkError, match=problem):
            network.make_subnets(*args, used)


def test_create_list_inspect_remove(paths):
    assert [n["name"] for n in network.list_networks(paths)] == ["podman"]
    default = network.get_network(paths, "2f259bab93aa")
    assert default["network_interface"] == "podman0" and default["subnets"][0]["subnet"] == "10.88.0.0/16"
    created = network.create_network(paths, "n1", internal=True, labels={"a": "b"})
    # podman's file, under the graph root, with podman's keys
    with open(f"{paths.graph_root}/networks/n1.json") as f:
        on_disk = json.load(f)
    assert on_disk == created
    assert set(created) == {"name", "id", "driver", "network_interface", "created", "subnets", "ipv6_enabled",
                            "internal", "dns_enabled", "ipam_options", "labels"}
    assert created["network_interface"] != "podman0" and created["dns_enabled"] and created["internal"]
    second = network.create_network(paths, subnets=["10.77.0.0/24"], dns=False)
    assert second["name"] == second["network_interface"]
    assert network.get_network(paths, created["id"][:10])["name"] == "n1"
    with pytest.raises(NetworkError, match="network name n1 already used"):
        network.create_network(paths, "n1")
    assert network.create_network(paths, "n1", ignore_existing=True)["id"] == created["id"]
    with pytest.raises(NetworkError, match="subnet 10.77.0.0/25 is already used"):
        network.create_network(paths, "n3", subnets=["10.77.0.0/25"])
    with pytest.raises(NetworkError, match="network name bad name invalid"):
        network.create_network(paths, "bad name")
    with pytest.raises(NetworkError, match="unsupported driver macvlan"):
        network.create_network(paths, "m", driver="macvlan")
    with pytest.raises(NetworkError, match="default network podman cannot be removed"):
        network.remove_network(paths, "podman")
    network.remove_network(paths, "n1")
    with pytest.raises(NoSuchNetwork, match="unable to find network with name or ID n1"):
        network.get_network(paths, "n1")


def test_unreadable_or_mismatched_config_files_are_skipped(paths):
    network.create_network(paths, "good")
    directory = f"{paths.graph_root}/networks"
    with open(f"{directory}/broken.json", "w") as f:
        f.write("{not json")
    with open(f"{directory}/other.json", "w") as f:
        json.dump({"name": "notother", "id": "0" * 64}, f)
    assert [n["name"] for n in network.list_networks(paths)] == ["good", "podman"]


def test_ipam_gives_the_next_free_address_and_skips_gateway_and_broadcast():
    net = {"name": "n", "subnets": [{"subnet": "10.9.0.0/29", "gateway": "10.9.0.1"}]}
    record = {"last": {}, "containers": {}}
    given = []
    for number in range(5):
        container_id = f"{number}" * 64
        addresses = network.allocate(record, net, container_id)
        record["containers"][container_id] = {"networks": {"n": addresses}}
        given += addresses
    assert given == ["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"]
    with pytest.raises(NetworkError, match="failed to find free IP"):
        network.allocate(record, net, "f" * 64)
    # a freed address comes back only after the others (podman's rotation)
    del record["containers"]["1" * 64]
    assert network.allocate(record, net, "f" * 64) == ["10.9.0.3"]
    with pytest.raises(NetworkError, match="10.9.0.4 is already allocated"):
        network.allocate(record, net, "e" * 64, ["10.9.0.4"])
    with pytest.raises(NetworkError, match="static ip 10.1.0.4 not in any subnet"):
        network.allocate(record, net, "e" * 64, ["10.1.0.4"])


def test_ipam_keeps_to_the_lease_range():
    net = {"name": "n", "subnets": [{"subnet": "10.9.0.0/24", "gateway": "10.9.0.1",
                                     "lease_range": {"start_ip": "10.9.0.100", "end_ip": "10.9.0.101"}}]}
    record = {"last": {}, "containers": {}}
    first = network.allocate(record, net, "a" * 64)
    record["containers"]["a" * 64] = {"networks": {"n": first}}
    assert first + network.allocate(record, net, "b" * 64) == ["10.9.0.100", "10.9.0.101"]


def test_netavark_options_have_podmans_shape():
    info = {"n1": network.default_network()}
    entry = {"name": "c1", "networks": {"n1": ["10.88.0.2"]}, "aliases": {"n1": ["abc"]},
             "interfaces": {"n1": "eth0"}, "ports": [mapping("", 8080, 80)]}
    options = network._network_options("a" * 64, "c1", info, entry)
    assert options == {"container_id": "a" * 64, "container_name": "c1",
                       "networks": {"n1": {"interface_name": "eth0", "static_ips": ["10.88.0.2"], "aliases": ["abc"]}},
                       "network_info": info, "port_mappings": [mapping("", 8080, 80)]}


def test_modes_without_a_bridge(paths):
    assert network.for_run(paths, "a" * 64, "c", "host", []) == \
        (None, {"mode": "host", "netns": None, "networks": [], "ports": [], "status": {}})
    assert network.for_run(paths, "a" * 64, "c", "none", [])[0] is None
    assert network.for_run(paths, "a" * 64, "c", "ns:/run/netns/x", [])[0] == "/run/netns/x"
    with pytest.raises(NetworkError, match="-p/--publish needs a bridge network: --network host"):
        network.for_run(paths, "a" * 64, "c", "host", ["80"])
    with pytest.raises(NoSuchNetwork):
        network.for_run(paths, "a" * 64, "c", "nosuch", [])
    with pytest.raises(NetworkError, match="slirp4netns is not supported"):
        network.for_run(paths, "a" * 64, "c", "slirp4netns", [])


def test_resolv_conf_and_hosts(tmp_path):
    host = tmp_path / "resolv.conf"
    host.write_text("nameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch example.org\noptions edns0\n")
    status = {"n1": {"dns_search_domains": ["dns.podman"], "dns_server_ips": ["10.89.0.1"],
                     "interfaces": {"eth0": {"mac_address": "x", "subnets": [{"ipnet": "10.89.0.5/24",
                                                                              "gateway": "10.89.0.1"}]}}}}
    info = {"status": status}
    assert network.resolv_conf(info, str(host)) == ("search dns.podman example.org\nnameserver 10.89.0.1\n"
                                                    "nameserver 192.0.2.53\noptions edns0\n")
    assert network.hosts_entries(info, "abc", "web") == "10.89.0.1\thost.containers.internal\n10.89.0.5\tabc web\n"


def test_inspect_settings_and_ps_ports_as_podmans():
    info = {"netns": "/run/netns/x", "aliases": {"podman": ["e3871607128c"]},
            "ports": [mapping("", 18080, 80), mapping("127.0.0.1", 43107, 81, protocol="udp"),
                      mapping("", 8000, 90, count=2)],
            "status": {"podman": {"interfaces": {"eth0": {"mac_address": "32:98:68:c0:36:e9", "subnets": [
                {"ipnet": "10.88.0.26/16", "gateway": "10.88.0.1"}]}}}}}
    settings = network.inspect_settings(info)
    assert (settings["IPAddress"], settings["IPPrefixLen"], settings["Gateway"], settings["MacAddress"]) == \
        ("10.88.0.26", 16, "10.88.0.1", "32:98:68:c0:36:e9")
    assert settings["Ports"] == {"80/tcp": [{"HostIp": "", "HostPort": "18080"}],
                                 "81/udp": [{"HostIp": "127.0.0.1", "HostPort": "43107"}],
                                 "90/tcp": [{"HostIp": "", "HostPort": "8000"}],
                                 "91/tcp": [{"HostIp": "", "HostPort": "8001"}]}
    assert settings["SandboxKey"] == "/run/netns/x"
    assert settings["Networks"]["podman"]["Aliases"] == ["e3871607128c"]
    assert settings["Networks"]["podman"]["NetworkID"] == "podman"
    assert network.ports_text(info["ports"]) == ("0.0.0.0:18080->80/tcp, 127.0.0.1:43107->81/udp, "
                                                 "0.0.0.0:8000-8001->90-91/tcp")
    assert network.inspect_settings(None)["Networks"] == {}


def test_networks_named_by_stored_containers():
    assert network._networks_named('{"networks": ["a", "b"]}', "{}") == ["a", "b"]
    assert network._networks_named("{}", '{"network": {"mode": "bridge", "networks": ["c"]}}') == ["c"]
    assert network._networks_named("not json", "{}") == []


def test_network_ls_templates_and_filters():
    from capsa.ctl.network import list_fields, matches_filters, render

    net = dict(network.default_network(), labels={"a": "b"})
    rows = [list_fields(net)]
    assert render("{{.Name}} {{.ID}} {{.Labels}} {{.Internal}}", rows, {}) == "podman 2f259bab93aa a=b false\n"
    assert render("table {{.ID}}\t{{.Name}}\t{{.Driver}}", rows, {"ID": "NETWORK ID", "Name": "NAME",
                                                                   "Driver": "DRIVER"}) == \
        "NETWORK ID    NAME        DRIVER\n2f259bab93aa  podman      bridge\n"
    assert matches_filters(net, ["name=pod", "driver=bridge", "label=a=b"])
    assert matches_filters(net, ["name=x", "name=^podman$"]) and not matches_filters(net, ["label!=a"])
    assert not matches_filters(net, ["id=3"])
    with pytest.raises(NetworkError, match="invalid filter 'colour=red'"):
        matches_filters(net, ["colour=red"])


def test_forget_after_reboot(paths):
    import os

    network._write_json(network._record_path(paths), {"last": {}, "containers": {"a" * 64: {"networks": {}}}})
    os.makedirs(f"{paths.run_root}/netns")
    open(f"{paths.run_root}/netns/netns-{'a' * 64}", "w").close()
    network.forget_after_reboot(paths)
    assert network.container_record(paths, "a" * 64) is None
    assert os.listdir(f"{paths.run_root}/netns") == []


def test_reserved_ports_are_held_until_closed():
    import os
    import socket

    (mapping_,) = network.assign_free_ports([mapping("127.0.0.1", 0, 80)])
    fds = network.reserve_ports([mapping_, dict(mapping_, protocol="udp")])
    try:
        assert len(fds) == 2 and all(os.get_inheritable(fd) for fd in fds)
        with pytest.raises(NetworkError, match="the port is already in use"):
            network.check_ports_free([mapping_])
        with socket.socket() as other, pytest.raises(OSError):
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            other.bind(("127.0.0.1", mapping_["host_port"]))
    finally:
        for fd in fds:
            os.close(fd)
    network.check_ports_free([mapping_])
