from __future__ import annotations

import json
import os

import pytest

from capsa.errors import CapsaError
from capsa.specgen import default_spec, write_spec


def test_default_matches_runc_shape():
    spec = default_spec(cgroup_namespace=False)
    assert spec["process"]["args"] == ["sh"] and spec["process"]["terminal"] is True
    assert spec["root"] == {"path": "rootfs", "readonly": True}
    assert [m["destination"] for m in spec["mounts"]][:2] == ["/proc", "/dev"]
    assert [ns["type"] for ns in spec["linux"]["namespaces"]] == ["pid", "network", "ipc", "uts", "mount"]


def test_cgroup_namespace_on_cgroup_v2_as_runc():
    # runc 1.1's `spec` adds a cgroup namespace on a cgroup v2 host, `spec --rootless` too.
    types = [ns["type"] for ns in default_spec(cgroup_namespace=True)["linux"]["namespaces"]]
    assert types == ["pid", "network", "ipc", "uts", "mount", "cgroup"]
    types = [ns["type"] for ns in default_spec(rootless=True, cgroup_namespace=True)["linux"]["namespaces"]]
    assert types == ["pid", "ipc", "uts", "mount", "cgroup", "user"]
    v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    assert ("cgroup" in [ns["type"] for ns in default_spec()["linux"]["namespaces"]]) == v2


def test_rootless():
    spec = default_spec(rootless=True, cgroup_namespace=False)
    types = [ns["type"] for ns in spec["linux"]["namespaces"]]
    assert types == ["pid", "ipc", "uts", "mount", "user"]  # runc 1.1's `spec --rootless`
    assert spec["linux"]["uidMappings"] == [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    sys_mount = next(m for m in spec["mounts"] if m["destination"] == "/sys")
    assert "rbind" in sys_mount["options"]
    assert not any(o.startswith("gid=") for m in spec["mounts"] for o in m.get("options", []))
    assert "resources" not in spec["linux"]


def test_write_spec_refuses_to_overwrite(tmp_path):
    path = write_spec(str(tmp_path))
    assert json.loads(open(path).read())["ociVersion"].startswith("1.")
    with pytest.raises(CapsaError, match="exists"):
        write_spec(str(tmp_path))
