from __future__ import annotations

import os

import pytest

from capsa import idmap, rootless
from capsa.errors import CapsaError, ConfigError
from capsa.specgen import default_spec


def test_parse_flag_as_runc():
    assert rootless.parse_flag("auto") is None and rootless.parse_flag("") is None
    assert rootless.parse_flag("true") is True and rootless.parse_flag("T") is True and rootless.parse_flag("1") is True
    assert rootless.parse_flag("false") is False and rootless.parse_flag("0") is False
    with pytest.raises(CapsaError, match="--rootless"):
        rootless.parse_flag("yes")


def test_rootless_cgroups_auto_follows_euid():
    assert rootless.rootless_cgroups("true") is True and rootless.rootless_cgroups("false") is False
    assert rootless.rootless_cgroups("auto") == (os.geteuid() != 0 or rootless.running_in_userns())


def test_check_spec_needs_a_user_namespace():
    spec = default_spec()
    with pytest.raises(ConfigError, match="rootless container requires user namespaces"):
        rootless.check_spec(spec)
    rootless.check_spec(default_spec(rootless=True))
    spec = default_spec(rootless=True)
    del spec["linux"]["gidMappings"]
    with pytest.raises(ConfigError, match="at least one GID mapping"):
        rootless.check_spec(spec)


def test_check_mapped():
    spec = default_spec(rootless=True)
    rootless.check_mapped(spec)
    spec["process"]["user"] = {"uid": 5, "gid": 0}
    with pytest.raises(ConfigError, match="uid 5 is not mapped"):
        rootless.check_mapped(spec)
    spec["process"]["user"] = {"uid": 0, "gid": 0, "additionalGids": [7]}
    with pytest.raises(ConfigError, match="gid 7 is not mapped"):
        rootless.check_mapped(spec)
    spec["process"]["user"] = {"uid": 0, "gid": 0}
    spec["mounts"].append({"destination": "/x", "type": "tmpfs", "source": "tmpfs", "options": ["uid=1000"]})
    with pytest.raises(ConfigError, match="uid=1000"):
        rootless.check_mapped(spec)
    with pytest.raises(ConfigError, match=r"exec\.user\.uid"):
        rootless.check_mapped(spec, {"user": {"uid": 3, "gid": 0}}, "exec")
    rootless.check_mapped(default_spec())  # no user namespace: nothing to check


def test_granted_ranges(tmp_path, monkeypatch):
    grants = tmp_path / "subuid"
    grants.write_text("someone:100000:65536\nme:200000:65536\n1234:300000:10\n# junk\nme:bad:1\n")
    monkeypatch.setattr(idmap, "_user_names", lambda: ("me", "1234"))
    assert idmap.granted_ranges(str(grants)) == [(200000, 65536), (300000, 10)]
    assert idmap.granted_ranges(str(tmp_path / "missing")) == []


def test_check_granted(tmp_path, monkeypatch):
    grants = tmp_path / "subuid"
    grants.write_text("me:200000:65536\n")
    monkeypatch.setattr(idmap, "_user_names", lambda: ("me", "1234"))
    ok = [{"containerID": 0, "hostID": 1234, "size": 1}, {"containerID": 1, "hostID": 200000, "size": 65536}]
    idmap._check_granted(ok, str(grants), "uidMappings", 1234)
    with pytest.raises(CapsaError, match="host ids 200000-265536 are not granted to user me"):
        idmap._check_granted([{"containerID": 1, "hostID": 200000, "size": 65537}], str(grants), "uidMappings", 1234)
