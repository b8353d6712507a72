"""capsa.api's pure parts: argument checks, the spec of a run, the seccomp profile, lazy loading."""

import os
import subprocess
import sys

import pytest

from capsa import api
from capsa.api import arguments
from capsa.api import spec as api_spec
from capsa.api.errors import InvalidArgumentError, SandboxError
from capsa.api.rootfs import Rootfs
from capsa.errors import CapsaError


@pytest.mark.parametrize(("text", "size"), [(4096, 4096), ("256M", 256 << 20), ("1.5G", 3 << 29), ("64KiB", 64 << 10),
                                            ("10k", 10 << 10), (" 2MB ", 2 << 20)])
def test_parse_size(text, size):
    assert api.parse_size(text) == size


@pytest.mark.parametrize("bad", ["lots", "", "-1M", 0, -5, True, 1.5, None, "12X"])
def test_parse_size_refuses_with_the_argument_named(bad):
    with pytest.raises(InvalidArgumentError, match="^memory: "):
        api.parse_size(bad, "memory")


def test_errors_are_capsa_errors_and_value_errors():
    assert issubclass(InvalidArgumentError, SandboxError) and issubclass(SandboxError, CapsaError)
    assert issubclass(InvalidArgumentError, ValueError)


def test_no_swap_limit_where_the_host_does_not_account_swap(monkeypatch):
    monkeypatch.setattr(api_spec, "can_limit_swap", lambda: False)
    assert spec_of(memory="64M")["linux"]["resources"]["memory"] == {"limit": 64 << 20}


def test_limits_refuse_bad_values():
    for kwargs in ({"cpus": 0}, {"pids": 2.5}, {"pids": True}, {"network": "yes"}, {"network": 1.0}, {"cpu_time": -1}):
        with pytest.raises(InvalidArgumentError, match=f"^{next(iter(kwargs))}: "):
            api.Limits.from_arguments(**kwargs)


def test_env_is_the_callers_only():
    assert arguments.check_env(None) == [api.PATH]
    assert arguments.check_env({"A": "1"}) == [api.PATH, "A=1"]
    assert arguments.check_env({"PATH": "/x"}) == ["PATH=/x"]
    with pytest.raises(InvalidArgumentError, match="^env: "):
        arguments.check_env({"A=B": "c"})


def spec_of(**limits):
    return api.build_spec(["true"], Rootfs("/r", [{"destination": "/usr", "type": "bind", "source": "/usr"}]),
                          api.Limits.from_arguments(**limits), [api.PATH], "/work")


def test_the_spec_has_the_safe_defaults():
    spec = spec_of()
    process, linux = spec["process"], spec["linux"]
    assert process["noNewPrivileges"] and not any(process["capabilities"].values())
    assert not process["terminal"] and process["env"] == [api.PATH]
    assert spec["root"] == {"path": "/r", "readonly": True}
    assert {ns["type"] for ns in linux["namespaces"]} == {"pid", "network", "ipc", "uts", "mount", "user"}
    assert linux["uidMappings"][0]["containerID"] == 0 and linux["uidMappings"][0]["hostID"] >= 65536
    assert "/proc/kcore" in linux["maskedPaths"] and "/proc/sys" in linux["readonlyPaths"]
    assert linux["seccomp"] == api.default_seccomp()
    destinations = [m["destination"] for m in spec["mounts"]]
    assert "/sys/fs/cgroup" not in destinations and {"/usr", "/tmp", "/work"} <= set(destinations)
    assert {"type": "RLIMIT_CORE", "hard": 0, "soft": 0} in process["rlimits"]


def test_network_true_keeps_the_hosts_network_namespace_and_binds_its_resolv_conf(tmp_path):
    (tmp_path / "etc").mkdir()
    limits = api.Limits.from_arguments(network=True)
    spec = api.build_spec(["true"], Rootfs(str(tmp_path)), limits, [api.PATH], "/work")
    assert {ns["type"] for ns in spec["linux"]["namespaces"]} == {"pid", "ipc", "uts", "mount", "user"}
    assert "/etc/resolv.conf" not in [m["destination"] for m in spec["mounts"]]  # nowhere to mount it
    (tmp_path / "etc" / "resolv.conf").write_text("")
    spec = api.build_spec(["true"], Rootfs(str(tmp_path)), limits, [api.PATH], "/work")
    resolv = [m for m in spec["mounts"] if m["destination"] == "/etc/resolv.conf"]
    assert os.path.exists("/etc/resolv.conf") <= (len(resolv) == 1 and "ro" in resolv[0]["options"])


def test_the_spec_carries_the_limits(monkeypatch):
    monkeypatch.setattr(api_spec, "can_limit_swap", lambda: True)
    spec = spec_of(memory="64M", cpus=0.5, pids=10, cpu_time=2.5, file_size="1M", scratch="8M")
    resources = spec["linux"]["resources"]
    assert resources["memory"] == {"limit": 64 << 20, "swap": 64 << 20}  # memory + swap: no swap
    assert resources["cpu"] == {"quota": 50_000, "period": 100_000}
    assert resources["pids"] == {"limit": 10}
    rlimits = {r["type"]: (r["soft"], r["hard"]) for r in spec["process"]["rlimits"]}
    assert rlimits["RLIMIT_CPU"] == (3, 4) and rlimits["RLIMIT_FSIZE"] == (1 << 20, 1 << 20)
    tmp = next(m for m in spec["mounts"] if m["destination"] == "/tmp")
    assert f"size={8 << 20}" in tmp["options"]


def test_the_seccomp_profile_validates():
    from capsa.spec import validate

    spec = spec_of()
    spec["root"]["path"] = "rootfs"
    validate(spec)
    profile = api.default_seccomp()
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO" and profile["defaultErrnoRet"] == 1
    allowed = set(profile["syscalls"][0]["names"])
    assert not {"ptrace", "mount", "unshare", "setns", "bpf", "keyctl", "add_key", "kexec_load", "io_uring_setup",
                "clone", "clone3", "personality", "socket", "pivot_root", "userfaultfd"} & allowed
    assert {"read", "execve", "execveat", "openat2", "close_range", "wait4", "rseq", "getrandom"} <= allowed


# What podman's (and Docker's) profile allows whatever the arguments and capabilities, and this one
# does not: namespace and mount calls (capability-gated there), ptrace and process_vm_* (allowed
# there from kernel 4.8), what Docker's documentation lists as refused, and MIPS's indirect syscall.
REFUSED_HERE = {"clock_adjtime", "clock_adjtime64", "clone", "clone3", "fsconfig", "fsmount", "fsopen", "fspick",
                "get_mempolicy", "keyctl", "mbind", "mount", "mount_setattr", "move_mount", "name_to_handle_at",
                "open_tree", "pidfd_getfd", "pivot_root", "process_vm_readv", "process_vm_writev", "ptrace", "reboot",
                "set_mempolicy", "setns", "syscall", "syslog", "umount", "umount2", "unshare"}


@pytest.mark.skipif(not os.path.exists("/usr/share/containers/seccomp.json"), reason="podman's profile is not here")
def test_the_seccomp_profile_is_podmans_allowlist_in_substance():
    import json

    with open("/usr/share/containers/seccomp.json") as f:
        podman = json.load(f)
    theirs = set().union(*(rule["names"] for rule in podman["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW"
                           and not rule.get("args") and not rule.get("includes") and not rule.get("excludes")))
    ours = set(api.default_seccomp("x86_64")["syscalls"][0]["names"])
    assert theirs - ours <= REFUSED_HERE and not REFUSED_HERE & ours
    refused_by_them = {name for rule in podman["syscalls"] if rule["action"] == "SCMP_ACT_ERRNO"
                       and not rule.get("includes") and not rule.get("args") for name in rule["names"]}
    assert not ours & refused_by_them
    # personality, clone, clone3 and socket: conditional rules, as theirs
    conditional = {rule["names"][0]: rule for rule in api.default_seccomp("x86_64")["syscalls"][1:]}
    assert set(conditional) == {"personality", "clone", "clone3", "socket"}


def test_import_capsa_does_not_load_the_api_until_a_name_is_used():
    code = ("import sys, capsa; print('capsa.api' in sys.modules); capsa.run; print('capsa.api' in sys.modules); "
            "print(hasattr(capsa, 'no_such_name'))")
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "True", "False"]


def test_rootless_problems_name_what_is_missing(monkeypatch):
    from capsa.api import rootless

    files = {"/proc/sys/user/max_user_namespaces": "0", "/proc/sys/kernel/unprivileged_userns_clone": "0"}
    monkeypatch.setattr(rootless, "_read", files.get)
    monkeypatch.setattr("shutil.which", lambda tool: None if tool == "newgidmap" else f"/usr/bin/{tool}")
    monkeypatch.setattr(rootless, "subordinate_range", lambda path: None if path == "/etc/subgid" else 100000)
    monkeypatch.setattr(rootless, "_user_name", lambda: "alice")
    found = rootless.problems()
    assert len(found) == 4
    assert "max_user_namespaces is 0" in found[0] and "unprivileged_userns_clone is 0" in found[1]
    assert found[2].startswith("newgidmap not found on PATH (Debian package uidmap)")
    assert found[3].startswith("/etc/subgid grants user alice no range of 65536 ids")
    assert "usermod --add-subgids 100000-165535 alice" in found[3]


def test_rootless_limits_without_a_delegated_cgroup_are_refused_naming_the_argument(monkeypatch):
    from capsa.api import rootless

    monkeypatch.setattr(api_spec.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(rootless, "delegated_cgroup", lambda: None)
    api_spec.check_limits_possible(api.Limits())  # no limits: nothing to refuse
    with pytest.raises(InvalidArgumentError) as caught:
        api_spec.check_limits_possible(api.Limits.from_arguments(pids=10))
    assert caught.value.argument == "pids" and "delegated" in str(caught.value)
    monkeypatch.setattr(rootless, "delegated_cgroup", lambda: "/sys/fs/cgroup/user.slice/me")
    api_spec.check_limits_possible(api.Limits.from_arguments(memory="1G"))
