"""Sandbox-wide pause and resume, and runsc's OOM rule: the parts that depend on the host's cgroups
and capabilities. Also run in the guest tier (cgroup v2, and a root with CAP_SYS_RESOURCE)."""

from __future__ import annotations

import os

from test_sandbox import _wait, add, capsa, pod, sandbox_state, start_pod, state  # noqa: F401 (pod: a fixture)

from capsa import jsonfast


def test_pause_freezes_every_member_and_resume_thaws_them(pod):  # noqa: F811 (the fixture)
    start_pod(pod)
    for cid in ("m1", "m2"):
        add(pod, pod.member(), cid)
    refused = capsa(pod, "sandbox", "resume", "pod1", check=False)
    assert refused.returncode == 1 and "cannot go from running to running" in refused.stderr
    capsa(pod, "sandbox", "pause", "pod1")
    assert sandbox_state(pod)["state"] == "paused"
    for cid in ("pod1", "m1", "m2"):
        assert state(pod, cid)["status"] == "paused"
        assert _freezer(pod, cid) == "FROZEN"
    again = capsa(pod, "sandbox", "pause", "pod1", check=False)
    assert again.returncode == 1 and "cannot go from paused to paused" in again.stderr
    capsa(pod, "sandbox", "resume", "pod1")
    assert sandbox_state(pod)["state"] == "running"
    for cid in ("pod1", "m1", "m2"):
        assert state(pod, cid)["status"] == "running" and _freezer(pod, cid) == "THAWED"
    # kill: every member and the holder.
    capsa(pod, "sandbox", "kill", "pod1", "KILL")
    _wait(lambda: all(state(pod, c)["status"] == "stopped" for c in ("pod1", "m1", "m2")))
    assert sandbox_state(pod)["state"] == "stopped"
    ready = capsa(pod, "sandbox", "pause", "pod1", check=False)
    assert ready.returncode == 1 and "cannot go from stopped to paused" in ready.stderr


def _freezer(pod, cid: str) -> str:  # noqa: F811
    """FROZEN or THAWED: the v1 freezer's state, or cgroup2's cgroup.freeze (1 or 0) on a unified host."""
    with open(os.path.join(pod.root, cid, "state.json")) as f:
        paths = jsonfast.loads(f.read())["cgroupPaths"]
    freezer = next((d for h, d in paths.items() if "freezer" in h.split(",")), None)
    if freezer is None:
        with open(os.path.join(paths[""], "cgroup.freeze")) as f:
            return {"1": "FROZEN", "0": "THAWED"}[f.read().strip()]
    with open(os.path.join(freezer, "freezer.state")) as f:
        return f.read().strip()


def _has_cap_sys_resource() -> bool:
    with open("/proc/self/status") as f:
        caps = next(line for line in f if line.startswith("CapEff:"))
    return bool(int(caps.split()[1], 16) & (1 << 24))


def test_holder_gets_the_lowest_oom_score_adj_of_its_members(pod):  # noqa: F811 (the fixture)
    """runsc's rule. Lowering a process's oom_score_adj needs CAP_SYS_RESOURCE, which root lacks on
    this host kind (the guest tier has it): there the values stay above the caller's own."""
    low, high, own = (-500, 200, 0) if _has_cap_sys_resource() else (100, 200, 300)
    pod.process["oomScoreAdj"] = own
    holder = start_pod(pod)

    def score() -> int:
        with open(f"/proc/{holder}/oom_score_adj") as f:
            return int(f.read())

    assert score() == own
    first, second = pod.member(), pod.member()
    first.process["oomScoreAdj"] = low
    second.process["oomScoreAdj"] = high
    add(pod, second, "m2")
    assert score() == min(own, high)
    add(pod, first, "m1")
    assert score() == low
    capsa(pod, "delete", "--force", "m1")
    assert score() == min(own, high)
    capsa(pod, "delete", "--force", "m2")
    assert score() == own
