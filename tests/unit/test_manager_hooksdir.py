"""OCI hooks directories (capsa.manager.hooksdir): parsing, conditions, precedence, merging."""

import json

import pytest

from capsa.manager import hooksdir


def definition(**changes):
    data = {"version": "1.0.0", "hook": {"path": "/bin/true"}, "when": {"always": True}, "stages": ["prestart"]}
    data.update(changes)
    return data


def write(directory, name, data):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(data if isinstance(data, str) else json.dumps(data))


def spec(args=("/bin/sh",), annotations=None, mounts=()):
    return {"process": {"args": list(args)}, "annotations": annotations or {}, "mounts": list(mounts)}


@pytest.mark.parametrize("data, problem", [
    ("{", "not JSON"),
    (definition(version="0.1.0"), "unsupported version"),
    (definition(hook={"path": "relative"}), "absolute"),
    (definition(hook={"path": "/bin/true", "timeout": 0}), "positive"),
    (definition(when={}), "at least one condition"),
    (definition(when={"sometimes": True}), "unknown when"),
    (definition(when={"commands": ["("]}), "invalid pattern"),
    (definition(stages=[]), "at least one stage"),
    (definition(stages=["prestart", "later"]), "unknown stage"),
])
def test_invalid_definitions_say_why(data, problem):
    with pytest.raises(hooksdir.InvalidHook, match=problem):
        hooksdir.parse("x.json", data if isinstance(data, str) else json.dumps(data))


def test_conditions_must_all_hold():
    d = hooksdir.parse("x.json", json.dumps(definition(when={
        "annotations": {"^com\\.example\\.gpu$": "^(yes|true)$"}, "commands": ["sh$"], "hasBindMounts": True})))
    bind = [{"destination": "/data", "type": "bind", "source": "/srv", "options": ["rbind"]}]
    assert d.matches(spec(annotations={"com.example.gpu": "yes"}), {"com.example.gpu": "yes"}, True)
    assert not d.matches(spec(), {"com.example.gpu": "no"}, True)            # annotation value
    assert not d.matches(spec(args=["/bin/true"]), {"com.example.gpu": "yes"}, True)  # command
    assert not d.matches(spec(), {"com.example.gpu": "yes"}, False)         # no bind mount
    assert hooksdir.has_bind_mounts(spec(mounts=bind))
    assert not hooksdir.has_bind_mounts(spec(mounts=[{"destination": "/tmp", "type": "tmpfs"}]))


def test_always_false_never_matches():
    d = hooksdir.parse("x.json", json.dumps(definition(when={"always": False, "commands": [".*"]})))
    assert not d.matches(spec(), {}, False)


def test_etc_masks_usr_share_and_order_is_by_file_name(tmp_path):
    usr, etc = tmp_path / "usr", tmp_path / "etc"
    write(usr, "10-a.json", definition(hook={"path": "/bin/true", "args": ["usr"]}))
    write(etc, "10-a.json", definition(hook={"path": "/bin/true", "args": ["etc"]}))
    write(usr, "05-b.json", definition(stages=["poststop", "createRuntime"]))
    defs = hooksdir.load([str(usr), str(etc)])
    assert [d.name for d in defs] == ["05-b.json", "10-a.json"]
    assert defs[1].hook["args"] == ["etc"]


def test_invalid_files_are_reported_and_skipped(tmp_path):
    write(tmp_path, "bad.json", "garbage")
    write(tmp_path, "missing.json", definition(hook={"path": "/no/such/hook"}))
    write(tmp_path, "good.json", definition())
    write(tmp_path, "notes.txt", "ignored: not .json")
    warnings = []
    defs = hooksdir.load([str(tmp_path), str(tmp_path / "absent")], warn=warnings.append)
    assert [d.name for d in defs] == ["good.json"]
    assert len(warnings) == 2
    assert any("bad.json" in w and "not JSON" in w for w in warnings)
    assert any("missing.json" in w and "does not exist" in w for w in warnings)


def test_merge_appends_after_the_configs_own_hooks(tmp_path):
    write(tmp_path, "a.json", definition(hook={"path": "/bin/true", "args": ["a"]}, stages=["prestart", "poststop"]))
    write(tmp_path, "b.json", definition(when={"commands": ["^/bin/never$"]}))
    s = spec()
    s["hooks"] = {"prestart": [{"path": "/bin/false"}]}
    matched = hooksdir.merge(s, hooksdir.load([str(tmp_path)]))
    assert matched == ["a.json"]
    assert [h["path"] for h in s["hooks"]["prestart"]] == ["/bin/false", "/bin/true"]
    assert s["hooks"]["poststop"] == [{"path": "/bin/true", "args": ["a"]}]


def test_the_caller_can_say_whether_there_are_bind_mounts(tmp_path):
    """capsactl's containers all bind /etc/hosts and co.: hasBindMounts is about the user's -v
    (libpod's len(UserVolumes) > 0), which the caller passes."""
    write(tmp_path, "bind.json", definition(when={"hasBindMounts": True}))
    own_binds = spec(mounts=[{"destination": "/etc/hosts", "type": "bind", "source": "/x", "options": ["rbind"]}])
    definitions = hooksdir.load([str(tmp_path)])
    assert hooksdir.merge(dict(own_binds), definitions) == ["bind.json"]  # from the spec's mounts
    assert hooksdir.merge(dict(own_binds), definitions, bind_mounts=False) == []
    assert hooksdir.merge(spec(), definitions, bind_mounts=True) == ["bind.json"]
