"""config.json validation: every rule names the JSON field it rejects."""

from __future__ import annotations

import copy
import json

import pytest

from capsa import spec
from capsa.errors import CapsaError, ConfigError
from capsa.specgen import default_spec


def valid() -> dict:
    return copy.deepcopy(default_spec())


def test_default_spec_is_valid():
    spec.validate(valid())
    spec.validate(copy.deepcopy(default_spec(rootless=True)))


def _set(path: str, value):
    def mutate(doc):
        target = doc
        keys = path.split(".")
        for key in keys[:-1]:
            target = target[int(key)] if isinstance(target, list) else target.setdefault(key, {})
        last = keys[-1]
        if value is DELETE:
            del target[last]
        elif isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return mutate


DELETE = object()

CASES = [
    ("ociVersion", _set("ociVersion", "2.0.0"), "ociVersion"),
    ("no ociVersion", _set("ociVersion", DELETE), "ociVersion"),
    ("no root", _set("root", DELETE), "root"),
    ("root.path type", _set("root.path", 5), "root.path"),
    ("no process", _set("process", DELETE), "process"),
    ("empty args", _set("process.args", []), "process.args"),
    ("args not strings", _set("process.args", ["sh", 1]), "process.args[1]"),
    ("relative cwd", _set("process.cwd", "tmp"), "process.cwd"),
    ("env without =", _set("process.env", ["PATH"]), "process.env[0]"),
    ("terminal type", _set("process.terminal", "yes"), "process.terminal"),
    ("uid negative", _set("process.user.uid", -1), "process.user.uid"),
    ("uid too big", _set("process.user.uid", 2**32), "process.user.uid"),
    ("umask", _set("process.user.umask", 0o10000), "process.user.umask"),
    ("gids", _set("process.user.additionalGids", ["5"]), "process.user.additionalGids[0]"),
    ("too many gids", _set("process.user.additionalGids", list(range(65537))), "process.user.additionalGids"),
    ("cap not a string", _set("process.capabilities.bounding", [5]), "process.capabilities.bounding[0]"),
    ("rlimit type", _set("process.rlimits", [{"type": "RLIMIT_NOPE", "soft": 1, "hard": 1}]), "process.rlimits[0].type"),
    ("rlimit soft>hard", _set("process.rlimits", [{"type": "RLIMIT_CORE", "soft": 2, "hard": 1}]), "process.rlimits[0]"),
    ("rlimit twice", _set("process.rlimits", [{"type": "RLIMIT_CORE", "soft": 1, "hard": 1}] * 2), "process.rlimits[1].type"),
    ("oom", _set("process.oomScoreAdj", 1001), "process.oomScoreAdj"),
    ("nnp", _set("process.noNewPrivileges", 1), "process.noNewPrivileges"),
    ("mount dest relative", _set("mounts.0.destination", "proc"), "mounts[0].destination"),
    ("mount no dest", _set("mounts.0.destination", DELETE), "mounts[0].destination"),
    ("mount options", _set("mounts.1.options", "ro"), "mounts[1].options"),
    ("hook phase", _set("hooks", {"prestop": []}), "hooks.prestop"),
    ("hook path", _set("hooks", {"prestart": [{"path": "rel"}]}), "hooks.prestart[0].path"),
    ("hook timeout", _set("hooks", {"poststop": [{"path": "/x", "timeout": 0}]}), "hooks.poststop[0].timeout"),
    ("annotation value", _set("annotations", {"k": 1}), "annotations.k"),
    ("ns type", _set("linux.namespaces", [{"type": "bogus"}]), "linux.namespaces[0].type"),
    ("ns twice", _set("linux.namespaces", [{"type": "pid"}, {"type": "pid"}]), "linux.namespaces[1].type"),
    ("ns path relative", _set("linux.namespaces", [{"type": "net" "work", "path": "x"}]), "linux.namespaces[0].path"),
    ("mappings without userns", _set("linux.uidMappings", [{"containerID": 0, "hostID": 1000, "size": 1}]), "linux.uidMappings"),
    ("mapping size", _set("linux.uidMappings", [{"containerID": 0, "hostID": 1, "size": 0}]), "linux.uidMappings[0].size"),
    ("device type", _set("linux.devices", [{"path": "/dev/x", "type": "z", "major": 1, "minor": 1}]), "linux.devices[0].type"),
    ("device no major", _set("linux.devices", [{"path": "/dev/x", "type": "c", "minor": 1}]), "linux.devices[0].major"),
    ("device path names no file", _set("linux.devices", [{"path": "/dev/x/..", "type": "c", "major": 1, "minor": 1}]), "linux.devices[0].path"),
    ("sysctl host", _set("linux.sysctl", {"kernel.panic": "1"}), "linux.sysctl.kernel.panic"),
    ("sysctl value", _set("linux.sysctl", {"net.ipv4.ip_forward": 1}), "linux.sysctl.net.ipv4.ip_forward"),
    ("masked relative", _set("linux.maskedPaths", ["proc/kcore"]), "linux.maskedPaths[0]"),
    ("propagation", _set("linux.rootfsPropagation", "weird"), "linux.rootfsPropagation"),
    ("time offsets without ns", _set("linux.timeOffsets", {"boottime": {"secs": 1}}), "linux.timeOffsets"),
    ("seccomp type", _set("linux.seccomp", []), "linux.seccomp"),
    # runtime-spec 1.3: process.scheduler, process.ioPriority, linux.memoryPolicy, idmapped mounts
    ("scheduler type", _set("process.scheduler", "SCHED_FIFO"), "process.scheduler"),
    ("scheduler no policy", _set("process.scheduler", {"nice": 1}), "process.scheduler.policy"),
    ("scheduler policy", _set("process.scheduler", {"policy": "SCHED_FAST"}), "process.scheduler.policy"),
    ("scheduler nice", _set("process.scheduler", {"policy": "SCHED_OTHER", "nice": 20}), "process.scheduler.nice"),
    ("scheduler nice int32", _set("process.scheduler", {"policy": "SCHED_FIFO", "priority": 1, "nice": 2**31}),
     "process.scheduler.nice"),
    ("fifo without priority", _set("process.scheduler", {"policy": "SCHED_FIFO"}), "process.scheduler.priority"),
    ("rr priority 100", _set("process.scheduler", {"policy": "SCHED_RR", "priority": 100}), "process.scheduler.priority"),
    ("priority with other", _set("process.scheduler", {"policy": "SCHED_OTHER", "priority": 5}), "process.scheduler.priority"),
    ("runtime with batch", _set("process.scheduler", {"policy": "SCHED_BATCH", "runtime": 5}), "process.scheduler.runtime"),
    ("deadline runtime", _set("process.scheduler", {"policy": "SCHED_DEADLINE", "deadline": 10**6}),
     "process.scheduler.runtime"),
    ("deadline < runtime", _set("process.scheduler", {"policy": "SCHED_DEADLINE", "runtime": 10**6, "deadline": 10**5}),
     "process.scheduler.deadline"),
    ("period < deadline", _set("process.scheduler", {"policy": "SCHED_DEADLINE", "runtime": 10**5, "deadline": 10**6,
                                                     "period": 10**5}), "process.scheduler.period"),
    ("deadline 2^63", _set("process.scheduler", {"policy": "SCHED_DEADLINE", "runtime": 10**5, "deadline": 2**63}),
     "process.scheduler.deadline"),
    ("period negative", _set("process.scheduler", {"policy": "SCHED_DEADLINE", "runtime": 10**5, "deadline": 10**6,
                                                   "period": -1}), "process.scheduler.period"),
    ("scheduler flag", _set("process.scheduler", {"policy": "SCHED_IDLE", "flags": ["SCHED_FLAG_FAST"]}),
     "process.scheduler.flags[0]"),
    ("ioprio type", _set("process.ioPriority", []), "process.ioPriority"),
    ("ioprio class", _set("process.ioPriority", {"class": "IOPRIO_CLASS_NONE", "priority": 0}), "process.ioPriority.class"),
    ("ioprio no class", _set("process.ioPriority", {"priority": 0}), "process.ioPriority.class"),
    ("ioprio no priority", _set("process.ioPriority", {"class": "IOPRIO_CLASS_BE"}), "process.ioPriority.priority"),
    ("ioprio 8", _set("process.ioPriority", {"class": "IOPRIO_CLASS_BE", "priority": 8}), "process.ioPriority.priority"),
    ("ioprio -1", _set("process.ioPriority", {"class": "IOPRIO_CLASS_IDLE", "priority": -1}), "process.ioPriority.priority"),
    ("mempolicy type", _set("linux.memoryPolicy", "bind"), "linux.memoryPolicy"),
    ("mempolicy no mode", _set("linux.memoryPolicy", {"nodes": "0"}), "linux.memoryPolicy.mode"),
    ("mempolicy mode", _set("linux.memoryPolicy", {"mode": "MPOL_FAST", "nodes": "0"}), "linux.memoryPolicy.mode"),
    ("mempolicy bind no nodes", _set("linux.memoryPolicy", {"mode": "MPOL_BIND"}), "linux.memoryPolicy.nodes"),
    ("mempolicy local nodes", _set("linux.memoryPolicy", {"mode": "MPOL_LOCAL", "nodes": "0"}), "linux.memoryPolicy.nodes"),
    ("mempolicy nodes syntax", _set("linux.memoryPolicy", {"mode": "MPOL_BIND", "nodes": "0-"}), "linux.memoryPolicy.nodes"),
    ("mempolicy nodes backwards", _set("linux.memoryPolicy", {"mode": "MPOL_BIND", "nodes": "3-1"}),
     "linux.memoryPolicy.nodes"),
    ("mempolicy node too high", _set("linux.memoryPolicy", {"mode": "MPOL_BIND", "nodes": "4096"}),
     "linux.memoryPolicy.nodes"),
    ("mempolicy flag", _set("linux.memoryPolicy", {"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_FAST"]}),
     "linux.memoryPolicy.flags[0]"),
    ("mempolicy static and relative", _set("linux.memoryPolicy", {
        "mode": "MPOL_INTERLEAVE", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES", "MPOL_F_RELATIVE_NODES"]}),
     "linux.memoryPolicy.flags"),
    ("mount uid without gid mappings", _set("mounts.1.uidMappings", [{"containerID": 0, "hostID": 1, "size": 1}]),
     "mounts[1].gidMappings"),
    ("mount mapping size", _set("mounts.1.gidMappings", [{"containerID": 0, "hostID": 1, "size": 0}]),
     "mounts[1].gidMappings[0].size"),
    ("idmap without mappings or userns", _set("mounts.1.options", ["rbind", "idmap"]), "mounts[1].uidMappings"),
]


@pytest.mark.parametrize("name,mutate,field", CASES, ids=[c[0] for c in CASES])
def test_rejects_with_field(name, mutate, field):
    doc = valid()
    mutate(doc)
    with pytest.raises(ConfigError) as caught:
        spec.validate(doc)
    assert caught.value.field == field, str(caught.value)
    assert field in str(caught.value)


def test_not_an_object():
    with pytest.raises(ConfigError):
        spec.validate([])


def test_hostname_needs_uts_namespace():
    doc = valid()
    doc["linux"]["namespaces"] = [ns for ns in doc["linux"]["namespaces"] if ns["type"] != "uts"]
    with pytest.raises(ConfigError, match="hostname"):
        spec.validate(doc)


def test_new_user_namespace_needs_mappings():
    doc = valid()
    doc["linux"]["namespaces"].append({"type": "user"})
    with pytest.raises(ConfigError, match="uidMappings"):
        spec.validate(doc)


def test_net_sysctl_with_network_namespace_is_fine():
    doc = valid()
    doc["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shmmax": "100", "fs.mqueue.msg_max": "10"}
    spec.validate(doc)


def test_uts_sysctls_as_runc_and_crun():
    """kernel.domainname: with a uts namespace, new or joined; kernel.hostname: never (the
    hostname field sets it)."""
    doc = valid()
    doc["linux"]["sysctl"] = {"kernel.domainname": "d"}
    spec.validate(doc)
    doc["linux"]["namespaces"] = [{"type": "uts", "path": "/proc/1/ns/uts"} if ns["type"] == "uts" else ns
                                  for ns in doc["linux"]["namespaces"]]
    doc.pop("hostname", None)
    spec.validate(doc)
    doc["linux"]["namespaces"] = [ns for ns in doc["linux"]["namespaces"] if ns["type"] != "uts"]
    with pytest.raises(ConfigError, match=r"linux\.sysctl\.kernel\.domainname.*uts namespace"):
        spec.validate(doc)
    doc = valid()
    doc["linux"]["sysctl"] = {"kernel.hostname": "h"}
    with pytest.raises(ConfigError, match=r"linux\.sysctl\.kernel\.hostname.*conflicts with the hostname field"):
        spec.validate(doc)


def test_any_1x_version_is_accepted():
    for version in ("1.0.0", "1.0.2-dev", "1.1.0", "1.2.1", "1.3.0"):
        doc = valid()
        doc["ociVersion"] = version
        spec.validate(doc)


def test_unknown_fields_are_ignored():
    doc = valid()
    doc["somethingNew"] = {"x": 1}
    doc["linux"]["futureThing"] = True
    spec.validate(doc)


def test_load_bundle_errors(tmp_path):
    with pytest.raises(CapsaError, match="does not exist"):
        spec.load_bundle(str(tmp_path / "missing"))
    with pytest.raises(CapsaError, match="config.json"):
        spec.load_bundle(str(tmp_path))
    (tmp_path / "config.json").write_text('{"ociVersion": "1.0.0",\n "process": }')
    with pytest.raises(ConfigError, match="line 2"):
        spec.load_bundle(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(valid()))
    assert spec.load_bundle(str(tmp_path))["process"]["args"] == ["sh"]


def test_unknown_capability_is_accepted_for_a_warning():
    # runtime-spec 1.1+: a capability that cannot be mapped MUST be logged as a warning and
    # runtimes SHOULD NOT fail (capsa.caps.unavailable names it at create and exec).
    doc = valid()
    doc["process"]["capabilities"]["bounding"].append("CAP_NOPE")
    spec.validate(doc)


def test_unavailable_capabilities_are_named_once():
    from capsa import caps

    capabilities = {"bounding": ["CAP_KILL", "CAP_NOPE"], "effective": ["CAP_NOPE", "CAP_ALSO_NOT"], "ambient": []}
    assert caps.unavailable(capabilities) == ["CAP_NOPE", "CAP_ALSO_NOT"]
    assert caps.unavailable({"bounding": ["CAP_KILL"]}) == []
    assert caps.unavailable(None) == []
    highest = caps.last_cap()
    assert caps._mask(["CAP_KILL", "CAP_NOPE"], highest) == 1 << 5



def test_runtime_spec_1_3_process_and_linux_fields_are_accepted():
    doc = valid()
    doc["process"]["scheduler"] = {"policy": "SCHED_DEADLINE", "runtime": 10**6, "deadline": 10**7, "period": 10**8,
                                   "flags": ["SCHED_FLAG_RESET_ON_FORK", "SCHED_FLAG_RECLAIM"]}
    doc["process"]["ioPriority"] = {"class": "IOPRIO_CLASS_RT", "priority": 7}
    doc["linux"]["memoryPolicy"] = {"mode": "MPOL_INTERLEAVE", "nodes": "0-3,7", "flags": ["MPOL_F_STATIC_NODES"]}
    spec.validate(doc)
    for scheduler in ({"policy": "SCHED_FIFO", "priority": 99}, {"policy": "SCHED_OTHER", "nice": -20},
                      {"policy": "SCHED_IDLE"}, {"policy": "SCHED_BATCH", "nice": 19}, {"policy": "SCHED_RR", "priority": 1,
                                                                                         "nice": -100}):
        doc["process"]["scheduler"] = scheduler
        spec.validate(doc)
    for policy in ({"mode": "MPOL_DEFAULT"}, {"mode": "MPOL_LOCAL"}, {"mode": "MPOL_PREFERRED"},
                   {"mode": "MPOL_PREFERRED", "nodes": "1"}, {"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_NUMA_BALANCING"]}):
        doc["linux"]["memoryPolicy"] = policy
        spec.validate(doc)


def test_node_lists_read_as_cpusets():
    assert spec.parse_node_list("0-3,7", "f") == [0, 1, 2, 3, 7]
    assert spec.parse_node_list(" 2 , 1-1", "f") == [1, 2]
    assert spec.parse_node_list("", "f") == []
    for bad in ("a", "1,,2", "-1", "1-", "\u00b2"):
        with pytest.raises(ConfigError, match="is not a list of nodes"):
            spec.parse_node_list(bad, "f")


def test_idmapped_mounts_validation():
    doc = valid()
    mapping = [{"containerID": 0, "hostID": 1000, "size": 10}]
    doc["mounts"].append({"destination": "/data", "type": "bind", "source": "/srv", "options": ["rbind", "ridmap"],
                          "uidMappings": mapping, "gidMappings": mapping})
    spec.validate(doc)
    # idmap without mappings of its own takes the container's user namespace's mappings.
    doc["mounts"][-1] = {"destination": "/data", "type": "bind", "source": "/srv", "options": ["bind", "idmap"]}
    doc["linux"]["namespaces"].append({"type": "user"})
    doc["linux"]["uidMappings"] = doc["linux"]["gidMappings"] = mapping
    spec.validate(doc)
