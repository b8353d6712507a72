"""capsactl's health checks end to end, as root, with real containers (issue 18, health part):
the monitor's schedule (no systemd here), `healthcheck run` and its exit codes, the status in ps
and inspect, health_status events, a hanging check killed at its timeout, the on-failure
actions, the image's Healthcheck, and bad options that leave the store as it was.

Short intervals, and no timing asserted: each test polls for what it waits for with a generous
deadline."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import time

import pytest
import test_capsactl_containers
from test_capsactl_containers import Ctl, check_nothing_left

busybox_rootfs = test_capsactl_containers.busybox_rootfs


@pytest.fixture
def ctl(tmp_path, busybox_rootfs):
    ctl = Ctl(str(tmp_path))
    ctl("import", "-q", "-c", 'CMD ["sh"]', busybox_rootfs, "busybox")
    yield ctl
    check_nothing_left(ctl, tmp_path)


DEADLINE = 60.0


def poll(what, deadline: float = DEADLINE):
    """what()'s first true result, asked until the deadline."""
    end = time.monotonic() + deadline
    while True:
        result = what()
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"not within {deadline}s: {what.__doc__ or what}")
        time.sleep(0.2)


def health(ctl, name: str) -> dict:
    return ctl.inspect(name)["State"]["Health"]


def status_of(ctl, name: str) -> str:
    return health(ctl, name)["Status"]


def health_events(ctl, name: str) -> list[str]:
    return [e["Attributes"]["health_status"] for e in ctl.events()
            if e["Status"] == "health_status" and e["Name"] == name]


def test_the_monitor_runs_checks_and_the_status_follows_them(ctl):
    ctl("run", "-d", "--name", "web", "--health-cmd", "test -e /tmp/ready && echo ready",
        "--health-interval", "500ms", "--health-retries", "2", "busybox", "sleep", "1000")
    assert status_of(ctl, "web") == "starting"
    assert "(starting)" in ctl("ps").stdout
    poll(lambda: status_of(ctl, "web") == "unhealthy")
    state = health(ctl, "web")
    assert state["FailingStreak"] >= 2
    assert all(entry["ExitCode"] == 1 for entry in state["Log"])
    assert {"Start", "End", "ExitCode", "Output"} <= set(state["Log"][0])

    ctl("exec", "web", "touch", "/tmp/ready")
    poll(lambda: status_of(ctl, "web") == "healthy")
    state = health(ctl, "web")
    assert state["FailingStreak"] == 0
    assert state["Log"][-1]["ExitCode"] == 0 and state["Log"][-1]["Output"] == "ready\n"
    assert len(state["Log"]) <= 5
    assert "Up" in ctl("ps").stdout and "(healthy)" in ctl("ps").stdout
    assert [e["Names"][0] for e in json.loads(ctl("ps", "--filter", "health=healthy", "--format", "json").stdout)] \
        == ["web"]
    assert health_events(ctl, "web")[:2] == ["unhealthy", "healthy"]
    config = ctl.inspect("web")["Config"]["Healthcheck"]
    assert config["Test"] == ["CMD-SHELL", "test -e /tmp/ready && echo ready"]
    assert config["Interval"] == 500_000_000 and config["Retries"] == 2


def test_healthcheck_run_exit_codes(ctl):
    ctl("run", "-d", "--name", "hc", "--health-cmd", '["cat", "/tmp/flag"]', "--health-interval", "disable",
        "busybox", "sleep", "1000")
    result = ctl("healthcheck", "run", "hc", check=False)
    assert result.returncode == 1 and result.stdout.strip() == "unhealthy"  # podman's word for a failed check
    assert status_of(ctl, "hc") == "starting"  # one failure of 3 retries
    assert "No such file" in health(ctl, "hc")["Log"][-1]["Output"]
    ctl("exec", "hc", "sh", "-c", "echo up > /tmp/flag")
    assert ctl("healthcheck", "run", "hc", check=False).returncode == 0
    assert status_of(ctl, "hc") == "healthy"

    ctl("run", "-d", "--name", "plain", "busybox", "sleep", "1000")
    result = ctl("healthcheck", "run", "plain", check=False)
    assert result.returncode == 125 and "no defined healthcheck" in result.stderr
    assert health(ctl, "plain")["Status"] == ""
    ctl("stop", "-t", "0", "hc")
    result = ctl("healthcheck", "run", "hc", check=False)
    assert result.returncode == 125 and "not running" in result.stderr
    assert ctl("healthcheck", "run", "nosuch", check=False).returncode == 125


def test_failures_in_the_start_period_do_not_count(ctl):
    ctl("run", "-d", "--name", "slow", "--health-cmd", "false", "--health-interval", "disable",
        "--health-retries", "1", "--health-start-period", "1h", "busybox", "sleep", "1000")
    for _ in range(2):
        result = ctl("healthcheck", "run", "slow", check=False)
        assert result.returncode == 1 and result.stdout.strip() == "unhealthy"
    state = health(ctl, "slow")
    assert state["Status"] == "starting" and state["FailingStreak"] == 0 and len(state["Log"]) == 2
    assert ctl.inspect("slow")["Config"]["Healthcheck"]["StartPeriod"] == 3600 * 10**9


@pytest.mark.parametrize("runtime", [[], ["--runtime", "runc"]], ids=["library", "runc"])
def test_a_hanging_check_is_killed_at_its_timeout(ctl, runtime):
    if runtime and not shutil.which(runtime[1]):
        pytest.skip(f"{runtime[1]} is not installed")
    ctl(*runtime, "run", "-d", "--name", "hang", "--health-cmd", "sleep 1000; echo never", "--health-timeout", "1s",
        "--health-interval", "disable", "--health-retries", "1", "busybox", "sleep", "1000")
    result = ctl("healthcheck", "run", "hang", check=False)
    assert result.returncode == 1 and result.stdout.strip() == "unhealthy"
    entry = health(ctl, "hang")["Log"][-1]
    assert entry["ExitCode"] == -1 and "timeout" in entry["Output"]
    pid = ctl.inspect("hang")["State"]["Pid"]
    # Nothing of the check is left running: the container's only live process is its own.
    assert poll(lambda: _processes_in(pid) == ["sleep 1000"]), _processes_in(pid)


def _processes_in(init_pid: int) -> list[str]:
    """The command lines of the live processes in the pid namespace of init_pid."""
    namespace = os.readlink(f"/proc/{init_pid}/ns/pid")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != namespace:
                continue
            with open(f"/proc/{entry}/stat", "rb") as f:
                if f.read().rpartition(b")")[2].split()[0] == b"Z":
                    continue  # killed: a zombie of the container's init, which reaps nothing (no --init)
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                found.append(f.read().replace(b"\0", b" ").decode().strip())
        except OSError:
            continue
    return sorted(found)


def test_on_failure_kill_and_stop(ctl):
    ctl("run", "-d", "--name", "k", "--health-cmd", "false", "--health-interval", "300ms", "--health-retries", "1",
        "--health-on-failure", "kill", "busybox", "sleep", "1000")
    poll(lambda: ctl.inspect("k")["State"]["Status"] == "exited")
    assert ctl.inspect("k")["State"]["ExitCode"] == 137
    assert "unhealthy" in health_events(ctl, "k")

    ctl("run", "-d", "--name", "s", "--health-cmd", "false", "--health-interval", "300ms", "--health-retries", "1",
        "--health-on-failure", "stop", "--stop-signal", "KILL", "busybox", "sleep", "1000")
    poll(lambda: ctl.inspect("s")["State"]["Status"] == "exited")
    assert any(e["Status"] == "stop" and e["Name"] == "s" for e in ctl.events())


def test_on_failure_restart_starts_it_again(ctl):
    ctl("run", "-d", "--name", "r", "--health-cmd", "test ! -e /tmp/started-once", "--health-interval", "300ms",
        "--health-retries", "1", "--health-on-failure", "restart", "--stop-signal", "KILL",
        "busybox", "sh", "-c", "touch /tmp/started-once; sleep 1000")
    first = ctl.inspect("r")["State"]["StartedAt"]

    def restarted():
        state = ctl.inspect("r")["State"]
        return state["Status"] == "running" and state["StartedAt"] != first
    poll(restarted)
    assert [e["Status"] for e in ctl.events() if e["Name"] == "r"].count("start") >= 2


def test_the_images_healthcheck_is_the_default(ctl, busybox_rootfs, tmp_path):
    archive = str(tmp_path / "hc.tar")
    _docker_archive(archive, busybox_rootfs, "hc:latest", {
        "Cmd": ["sleep", "1000"],
        "Healthcheck": {"Test": ["CMD-SHELL", "echo from-image"], "Interval": 300_000_000,
                        "Timeout": 5_000_000_000, "Retries": 2}})
    ctl("load", "-q", "-i", archive)
    ctl("run", "-d", "--name", "img", "hc")
    assert ctl.inspect("img")["Config"]["Healthcheck"]["Test"] == ["CMD-SHELL", "echo from-image"]
    poll(lambda: status_of(ctl, "img") == "healthy")
    assert health(ctl, "img")["Log"][-1]["Output"] == "from-image\n"

    ctl("create", "--name", "over", "--health-cmd", "echo mine", "--health-retries", "7", "hc")
    config = ctl.inspect("over")["Config"]["Healthcheck"]
    assert config["Test"] == ["CMD-SHELL", "echo mine"] and config["Retries"] == 7
    assert config["Interval"] == 300_000_000
    ctl("create", "--name", "off", "--no-healthcheck", "hc")
    assert ctl.inspect("off")["Config"]["Healthcheck"] is None
    ctl("run", "-d", "--name", "offrun", "--no-healthcheck", "hc")
    assert "(" not in [line for line in ctl("ps").stdout.splitlines() if "offrun" in line][0]


def _docker_archive(path: str, rootfs: str, tag: str, config: dict) -> None:
    """A docker-archive (as `docker save` writes) of the rootfs as one layer, with this config."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        for entry in sorted(os.listdir(rootfs)):
            tar.add(os.path.join(rootfs, entry), arcname=entry)
    layer_bytes = layer.getvalue()
    image_config = json.dumps({"architecture": _go_arch(), "os": "linux", "config": config,
                               "rootfs": {"type": "layers",
                                          "diff_ids": ["sha256:" + hashlib.sha256(layer_bytes).hexdigest()]}}).encode()
    config_name = hashlib.sha256(image_config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": ["layer.tar"]}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in (("layer.tar", layer_bytes), (config_name, image_config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _go_arch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def test_bad_health_options_are_clear_errors_and_store_nothing(ctl):
    for flags, words in ((["--health-cmd", "true", "--health-interval", "5x"], "--health-interval"),
                         (["--health-cmd", "true", "--health-timeout", "soon"], "--health-timeout"),
                         (["--health-cmd", "true", "--health-start-period", "1m 2s"], "--health-start-period"),
                         (["--health-cmd", "true", "--health-retries", "three"], "--health-retries"),
                         (["--health-cmd", "true", "--health-retries", "0"], "--health-retries"),
                         (["--health-cmd", "true", "--health-on-failure", "explode"], "--health-on-failure"),
                         (["--health-cmd", "[\"unclosed\""], "--health-cmd"),
                         (["--health-interval", "1s"], "--health-cmd")):
        result = ctl("create", "--name", "bad", *flags, "busybox", "true", check=False)
        assert result.returncode == 125, (flags, result.stderr)
        assert words in result.stderr, (flags, result.stderr)
        assert ctl.ps() == []
    assert not [e for e in ctl.events() if e["Status"] == "create"]
