"""capsa.api's pure parts: argument checks, the spec of a run, the seccomp profile, lazy loading."""

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
    for kwargs in ({"cpus": 0}, {"pids": 2.5}, {"pids": True}, {"network": "yes"}, {"cpu_time": -1}):
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
    denied = api.default_seccomp()["syscalls"][0]["names"]
    assert {"ptrace", "mount", "unshare", "setns", "bpf", "keyctl", "kexec_load"} <= set(denied)


def test_import_capsa_does_not_load_the_api_until_a_name_is_used():
    code = ("import sys, capsa; print('capsa.api' in sys.modules); capsa.run; print('capsa.api' in sys.modules); "
            "print(hasattr(capsa, 'no_such_name'))")
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "True", "False"]
