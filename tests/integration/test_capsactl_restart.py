"""capsactl's restart policies end to end (issue 18, restart part): --restart on create/run, the
monitor's exit hook restarting per policy with a back-off, stop/kill ending restarts,
RestartCount and the events, on-failure:N giving up, and the boot path after a simulated reboot
(`start --all --filter restart-policy=...`)."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from test_capsactl_containers import (
    Ctl,
    busybox_rootfs,  # noqa: F401 - a fixture
    check_nothing_left,
    wait_until,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def ctl(tmp_path, busybox_rootfs):  # noqa: F811
    ctl = Ctl(str(tmp_path))
    ctl("import", "-q", "-c", 'CMD ["sh"]', busybox_rootfs, "busybox")
    yield ctl
    check_nothing_left(ctl, tmp_path)


def restarters_of(ctl: Ctl) -> list[int]:
    """The restarter processes (capsa.manager.restarter) of this store still alive."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                arguments = f.read().split(b"\0")
        except OSError:
            continue
        if any(b"capsa.manager.restarter" in a for a in arguments) and ctl.runroot.encode() in arguments:
            found.append(int(pid))
    return found


def restart_count(ctl: Ctl, name: str) -> int:
    return ctl.inspect(name)["RestartCount"]


def events_of(ctl: Ctl, name: str, status: str) -> list[dict]:
    return [e for e in ctl.events() if e.get("Name") == name and e.get("Status") == status]


def settled(ctl: Ctl, name: str, status: str = "running") -> dict:
    """The container's inspect once it is `status` with no restart pending."""
    def check():
        data = ctl.inspect(name)
        state = data["State"]
        return data if state["Status"] == status and not state["Restarting"] else None

    return wait_until(check, f"{name} to be {status}")


def test_always_restarts_a_container_that_exits(ctl):
    ctl("run", "-d", "--name", "phoenix", "--restart", "always", "busybox", "sh", "-c", "echo life; exit 3")
    wait_until(lambda: len(events_of(ctl, "phoenix", "restart")) >= 2, "two restart events")
    data = ctl.inspect("phoenix")
    assert data["HostConfig"]["RestartPolicy"] == {"Name": "always", "MaximumRetryCount": 0}
    assert data["RestartCount"] >= 2
    logs = ctl("logs", "phoenix").stdout
    assert logs.count("life") >= 2
    # stop ends the restarts: it stays exited, whatever state the loop was in
    ctl("stop", "-t", "1", "phoenix")
    wait_until(lambda: not restarters_of(ctl), "the restarters to end")
    data = settled(ctl, "phoenix", "exited")
    assert data["RestartCount"] == restart_count(ctl, "phoenix")


def test_rm_during_the_restart_loop_leaves_nothing(ctl):
    ctl("run", "-d", "--name", "loop", "--restart", "always", "busybox", "true")
    wait_until(lambda: restart_count(ctl, "loop") >= 1, "a restart")
    ctl("rm", "-f", "-t", "0", "loop")
    wait_until(lambda: not restarters_of(ctl), "the restarters to end")
    assert ctl.ps() == []  # and the fixture checks that no monitor, mount or cgroup is left


def test_on_failure_n_gives_up_and_says_so(ctl):
    ctl("run", "-d", "--name", "failing", "--restart", "on-failure:2", "busybox", "sh", "-c", "exit 7")
    wait_until(lambda: events_of(ctl, "failing", "restart-gave-up"), "the gave-up event")
    data = settled(ctl, "failing", "exited")
    assert data["RestartCount"] == 2 and data["State"]["ExitCode"] == 7
    assert data["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert len(events_of(ctl, "failing", "restart")) == 2
    note = events_of(ctl, "failing", "restart-gave-up")[0]["Attributes"]
    assert note["restartPolicy"] == "on-failure:2" and note["restartCount"] == "2"


def test_a_failing_start_by_policy_is_retried_with_the_policy(ctl):
    # the command removes itself: the next start fails (127), and the policy goes on
    ctl("run", "-d", "--name", "gone", "--restart", "on-failure:3", "busybox", "sh", "-c", "rm /bin/sh; exit 1")
    wait_until(lambda: events_of(ctl, "gone", "restart-gave-up"), "the gave-up event")
    data = settled(ctl, "gone", "exited")
    assert data["RestartCount"] == 3 and data["State"]["ExitCode"] == 127


def test_a_foreground_run_returns_its_exit_and_the_restarts_go_on(ctl):
    result = ctl("run", "--name", "fg", "--restart", "on-failure:2", "busybox", "sh", "-c", "echo once; exit 4",
                 check=False)
    assert result.returncode == 4 and result.stdout == "once\n"
    wait_until(lambda: events_of(ctl, "fg", "restart-gave-up"), "the gave-up event")
    assert settled(ctl, "fg", "exited")["RestartCount"] == 2
    assert ctl("logs", "fg").stdout.count("once") == 3


def test_on_failure_does_not_restart_a_success(ctl):
    ctl("run", "-d", "--name", "fine", "--restart", "on-failure", "busybox", "true")
    ctl("wait", "fine")
    data = settled(ctl, "fine", "exited")
    assert data["RestartCount"] == 0 and not events_of(ctl, "fine", "restart")


@pytest.mark.parametrize("verb", ["stop", "kill"])
def test_stop_and_kill_by_the_user_end_restarts(ctl, verb):
    ctl("run", "-d", "--name", "svc", "--restart", "always", "busybox", "sleep", "1000")
    pid = ctl.inspect("svc")["State"]["Pid"]
    os.kill(pid, signal.SIGKILL)  # not the user's command: restarted
    wait_until(lambda: events_of(ctl, "svc", "restart"), "the restart after a crash")
    data = settled(ctl, "svc")
    assert data["State"]["Pid"] != pid
    ctl(verb, *(["-t", "1"] if verb == "stop" else []), "svc")
    ctl("wait", "svc")
    data = settled(ctl, "svc", "exited")
    assert data["RestartCount"] == 1 and len(events_of(ctl, "svc", "restart")) == 1
    # the user's start: running again, its count reset (podman's)
    ctl("start", "svc")
    assert settled(ctl, "svc")["RestartCount"] == 0


def test_capsactl_restart_keeps_working(ctl):
    ctl("run", "-d", "--name", "again", "--restart", "always", "busybox", "sleep", "1000")
    pid = ctl.inspect("again")["State"]["Pid"]
    ctl("restart", "-t", "1", "again")
    data = settled(ctl, "again")
    assert data["State"]["Pid"] != pid and data["RestartCount"] == 0
    assert len(events_of(ctl, "again", "restart")) == 1  # the command's, no extra one from the policy


@pytest.mark.parametrize("bad", ["sometimes", "always:3", "on-failure:x", "on-failure:-1", "no:1"])
def test_a_malformed_policy_is_a_clear_error_and_nothing_is_made(ctl, bad):
    for verb in ("create", "run"):
        result = ctl(verb, "--name", "bad", "--restart", bad, "busybox", "true", check=False)
        assert result.returncode != 0
        assert "restart policy" in result.stderr and bad in result.stderr
    assert ctl.ps() == []


def test_rm_conflicts_with_a_restarting_policy(ctl):
    result = ctl("run", "--rm", "--restart", "always", "busybox", "true", check=False)
    assert result.returncode != 0 and "--rm" in result.stderr
    assert ctl.ps() == []


def test_boot_starts_always_and_unless_stopped_not_stopped_ones(monkeypatch, ctl, tmp_path):
    boot_file = tmp_path / "boot_id"
    boot_file.write_text("boot-one\n")
    monkeypatch.setenv("CAPSA_BOOT_ID_FILE", str(boot_file))  # store.boot_id's test hook
    for name, rule in (("a", "always"), ("u", "unless-stopped"), ("us", "unless-stopped"), ("n", "no"),
                       ("f", "on-failure")):
        ctl("run", "-d", "--name", name, "--restart", rule, "busybox", "sleep", "1000")
    ctl("stop", "-t", "0", "us")  # the user stopped it: it stays down after the reboot
    ctl("create", "--name", "c", "--restart", "always", "busybox", "sleep", "1000")
    listed = ctl("ps", "-a", "--filter", "restart-policy=unless-stopped", "--format", "{{.Names}}").stdout
    assert sorted(listed.split()) == ["u", "us"]  # ps's filter: the policy, stopped or not
    # "Reboot": the new boot id makes the next call refresh; it kills what the old boot left.
    boot_file.write_text("boot-two\n")
    assert all(e["State"] in ("exited", "created") for e in ctl.ps())
    assert not any(ctl.inspect(name)["State"]["Restarting"] for name in ("a", "u", "n", "f"))
    boot = ["start", "--all", "--filter", "restart-policy=always", "--filter", "restart-policy=unless-stopped"]
    started = ctl(*boot).stdout.split()
    assert sorted(started) == ["a", "c", "u"]
    states = {e["Names"][0]: e["State"] for e in ctl.ps()}
    assert states == {"a": "running", "c": "running", "u": "running", "us": "exited", "n": "exited",
                      "f": "exited"}
    # the boot command's line in the shipped units is this one
    for unit in ("contrib/systemd/capsactl-restart.service", "contrib/systemd/user/capsactl-restart.service"):
        with open(os.path.join(ROOT, unit)) as f:
            assert " ".join(boot) in f.read()


def test_start_all_filter_errors(ctl):
    result = ctl("start", "--all", "--filter", "restart-policy=sometimes", check=False)
    assert result.returncode != 0 and "restart-policy=sometimes" in result.stderr
    result = ctl("start", "--filter", "restart-policy=always", check=False)
    assert result.returncode != 0 and "--all" in result.stderr


def test_rootless_restarts_and_boot(busybox_rootfs):  # noqa: F811
    """As `nobody` (the user unit's case): restarts by policy and the boot command."""
    import json
    import pwd
    import shutil
    import tempfile

    from test_capsactl_containers import capsactl_command

    if not shutil.which("setpriv"):
        pytest.skip("setpriv is needed to run as another user")
    user = pwd.getpwnam("nobody")
    base = tempfile.mkdtemp(prefix="ctr-rootless-restart-")
    os.chmod(base, 0o755)
    rootfs = os.path.join(base, "rootfs")
    subprocess.run(["cp", "-a", busybox_rootfs, rootfs], check=True)
    boot_file = os.path.join(base, "boot_id")
    with open(boot_file, "w") as f:
        f.write("boot-one\n")
    subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", base], check=True)
    command = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "env",
               f"HOME={base}", f"XDG_RUNTIME_DIR={base}/run", f"CAPSA_BOOT_ID_FILE={boot_file}", *capsactl_command()]

    def as_user(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([*command, *args], capture_output=True, text=True, timeout=120, cwd=base)
        if check and result.returncode != 0:
            raise AssertionError(f"capsactl {' '.join(args)} as nobody exited {result.returncode}: {result.stderr}")
        return result

    def inspect(name: str) -> dict:
        return json.loads(as_user("inspect", name).stdout)[0]

    try:
        if as_user("ps", check=False).returncode != 0:
            pytest.skip("nobody cannot run this checkout's capsactl")
        as_user("import", "-q", rootfs, "busybox")
        probe = as_user("run", "--rm", "busybox", "true", check=False)
        if probe.returncode != 0 and "user namespace" in probe.stderr:
            pytest.skip(f"this host does not let an unprivileged user make user namespaces: {probe.stderr}")
        as_user("run", "-d", "--name", "flaky", "--restart", "on-failure:2", "busybox", "sh", "-c", "exit 3")
        wait_until(lambda: inspect("flaky")["RestartCount"] == 2 and inspect("flaky")["State"]["Status"] == "exited"
                   and not inspect("flaky")["State"]["Restarting"], "two restarts as nobody")
        as_user("run", "-d", "--name", "svc", "--restart", "unless-stopped", "busybox", "sleep", "1000")
        with open(boot_file, "w") as f:
            f.write("boot-two\n")
        assert as_user("ps", "-q").stdout == ""  # the simulated reboot: nothing runs
        boot = as_user("start", "--all", "--filter", "restart-policy=always", "--filter",
                       "restart-policy=unless-stopped")
        assert boot.stdout.split() == ["svc"]
        assert inspect("svc")["State"]["Status"] == "running"
    finally:
        subprocess.run([*command, "rm", "-a", "-f", "-t", "0"], capture_output=True, cwd=base)
        shutil.rmtree(base, ignore_errors=True)
