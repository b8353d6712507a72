"""capsa.manager.auth: containers-auth.json read and written as podman and skopeo do."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from capsa.manager import auth


def test_keys_go_from_the_most_specific_to_the_registry():
    assert auth.candidate_keys("quay.io", "me/app") == ["quay.io/me/app", "quay.io/me", "quay.io"]
    assert auth.candidate_keys("127.0.0.1:5000", None) == ["127.0.0.1:5000"]
    assert "https://index.docker.io/v1/" in auth.candidate_keys("docker.io", "library/busybox")


def test_store_lookup_remove_round_trip(tmp_path):
    path = str(tmp_path / "sub" / "auth.json")
    auth.store("127.0.0.1:5000", "alice", "pa:ss", path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(open(path).read())["auths"]["127.0.0.1:5000"]["auth"] == base64.b64encode(b"alice:pa:ss").decode()
    assert auth.lookup("127.0.0.1:5000", "x/y", path) == ("alice", "pa:ss")
    assert auth.lookup("127.0.0.1:5001", "x/y", path) is None
    assert auth.remove("127.0.0.1:5000", path) is True
    assert auth.remove("127.0.0.1:5000", path) is False
    assert auth.lookup("127.0.0.1:5000", "x/y", path) is None


def test_a_repository_key_wins_over_the_registry_and_other_keys_are_kept(tmp_path):
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"auths": {}, "credHelpers": {"x": "y"}}))
    auth.store("quay.io", "everyone", "1", str(path))
    auth.store("quay.io/me", "me", "2", str(path))
    assert auth.lookup("quay.io", "me/app", str(path)) == ("me", "2")
    assert auth.lookup("quay.io", "other/app", str(path)) == ("everyone", "1")
    assert json.loads(path.read_text())["credHelpers"] == {"x": "y"}


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(auth.AuthError, match="does not exist"):
        auth.lookup("quay.io", None, str(tmp_path / "missing.json"))
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    with pytest.raises(auth.AuthError, match="cannot read the auth file"):
        auth.lookup("quay.io", None, str(garbage))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"auths": {"quay.io": {"auth": "bm90LWEtcGFpcg=="}}}))  # "not-a-pair"
    with pytest.raises(auth.AuthError, match="not user:password"):
        auth.lookup("quay.io", None, str(bad))


def test_default_path_follows_podman(monkeypatch):
    monkeypatch.setenv("REGISTRY_AUTH_FILE", "/x/auth.json")
    assert auth.default_path() == "/x/auth.json"
    monkeypatch.delenv("REGISTRY_AUTH_FILE")
    if os.geteuid() == 0:
        assert auth.default_path() == "/run/containers/0/auth.json"
