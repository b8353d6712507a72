"""capsa.manager.pods' pure rules: --share, the pod's status, a member's OCI config."""

from __future__ import annotations

import json

import pytest

from capsa import sandbox
from capsa.manager.errors import ManagerError
from capsa.manager.pods import Pod, apply_to_spec, parse_share, pod_status


@pytest.mark.parametrize("text, kinds", [
    (None, ["network", "ipc", "uts"]),                      # podman's default: cgroup,ipc,net,uts
    ("net,ipc,uts", ["network", "ipc", "uts"]),
    ("uts,pid,ipc,net", ["network", "ipc", "uts", "pid"]),
    ("net,ipc,uts,cgroup,net", ["network", "ipc", "uts"]),
])
def test_share(text, kinds):
    assert parse_share(text) == kinds


def test_share_names_an_unknown_kind_and_the_missing_ones():
    with pytest.raises(ManagerError, match="'mnt': unknown namespace"):
        parse_share("net,ipc,uts,mnt")
    with pytest.raises(ManagerError, match="ipc, uts missing"):
        parse_share("net,pid")


@pytest.mark.parametrize("statuses, status", [
    ([], "Created"),
    (["created", "created"], "Created"),
    (["running", "stopping"], "Running"),
    (["paused", "paused"], "Paused"),
    (["exited", "exited"], "Exited"),
    (["running", "exited"], "Degraded"),
    (["created", "running"], "Degraded"),
])
def test_pod_status(statuses, status):
    assert pod_status(statuses) == status


def _pod(infra: bool = True, share=("network", "ipc", "uts")) -> Pod:
    config = {"Infra": infra, "Share": list(share), "InfraContainerID": "i" * 64 if infra else "", "Hostname": "web"}
    return Pod({"id": "p" * 64, "name": "web", "config": json.dumps(config), "state": "{}", "created": "now"})


def _spec() -> dict:
    return {"hostname": "abc", "linux": {"cgroupsPath": "/capsactl/c", "namespaces": [
        {"type": "pid"}, {"type": "network", "path": "/run/netns/x"}, {"type": "ipc"}, {"type": "uts"},
        {"type": "mount"}]}}


def test_a_member_names_the_infra_container_as_its_sandbox_and_joins_its_namespaces():
    spec = _spec()
    apply_to_spec(spec, _pod(), "c" * 64, infra=False)
    assert sandbox.parse_annotations(spec["annotations"]) == (sandbox.CONTAINER, "i" * 64)
    namespaces = spec["linux"]["namespaces"]
    assert {ns["type"] for ns in namespaces} == {"pid", "network", "ipc", "uts", "mount"}
    assert all("path" not in ns for ns in namespaces)  # capsa.sandbox fills in the holder's
    assert spec["linux"]["cgroupsPath"] == f"/capsactl/pod-{'p' * 64}/{'c' * 64}"
    assert sandbox.parent_of(spec["linux"]["cgroupsPath"]) == f"/capsactl/pod-{'p' * 64}"
    assert spec["hostname"] == "web"


def test_the_infra_container_is_the_sandbox_and_asks_for_pid_only_when_shared():
    spec = _spec()
    apply_to_spec(spec, _pod(), "i" * 64, infra=True)
    assert sandbox.parse_annotations(spec["annotations"]) == (sandbox.SANDBOX, None)
    assert not sandbox.shares_pid(spec)
    spec = _spec()
    apply_to_spec(spec, _pod(share=("network", "ipc", "uts", "pid")), "i" * 64, infra=True)
    assert sandbox.shares_pid(spec)


def test_a_pod_without_infra_changes_nothing():
    spec = _spec()
    apply_to_spec(spec, _pod(infra=False, share=()), "c" * 64, infra=False)
    assert spec == _spec()


def test_the_store_has_a_pods_table_whose_names_are_unique(tmp_path):
    import sqlite3

    from capsa.manager.paths import Paths
    from capsa.manager.store import Store

    store = Store(Paths(str(tmp_path / "g"), str(tmp_path / "r"), str(tmp_path / "s")))
    try:
        with store.transaction() as db:
            db.execute("INSERT INTO pods (id, name, config, state, created) VALUES ('a', 'web', '{}', '{}', 'now')")
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"), store.transaction() as db:
            db.execute("INSERT INTO pods (id, name, config, state, created) VALUES ('b', 'web', '{}', '{}', 'now')")
        assert [row["id"] for row in store.query("SELECT id FROM pods")] == ["a"]
    finally:
        store.close()
