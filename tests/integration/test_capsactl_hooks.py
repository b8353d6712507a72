"""capsactl's OCI hooks directories end to end, as root (issue 18, deps part): the global
--hooks-dir (repeatable; a later directory's file masks an earlier one's of the same name), hook
files of schema 1.0.0 merged into the container's spec at create when their `when` matches
(always, annotations, commands, hasBindMounts), run by the runtime at their stages; an invalid
file is a warning naming it, and is skipped."""

# ruff: noqa: F811 - the fixtures imported from test_capsactl_containers are test parameters here
from __future__ import annotations

import json

from test_capsactl_containers import Ctl, busybox_rootfs, ctl, wait_until  # noqa: F401 - fixtures

MARK = """#!/bin/sh
# an OCI hook: $1 is the name it logs, the container's state comes on stdin
state=$(cat)
echo "$1 $state" >> "$(dirname "$0")/hooks.log"
"""


class Hooks:
    """A hook script (mark.sh: appends its name and the state it was given to hooks.log) and
    directories of hook files that run it."""

    def __init__(self, base):
        self.base = base
        self.script = base / "mark.sh"
        self.script.write_text(MARK)
        self.script.chmod(0o755)
        self.log = base / "hooks.log"

    def directory(self, name: str):
        path = self.base / name
        path.mkdir()
        return path

    def add(self, directory, file_name: str, mark: str, stages: list[str], when: dict | None = None) -> None:
        (directory / file_name).write_text(json.dumps({
            "version": "1.0.0",
            "hook": {"path": str(self.script), "args": ["mark.sh", mark]},
            "when": when or {"always": True},
            "stages": stages}))

    def ran(self) -> list[tuple[str, dict]]:
        """(name, state) of each hook run so far, in order; the log starts over."""
        if not self.log.exists():
            return []
        lines = self.log.read_text().splitlines()
        self.log.unlink()
        return [(name, json.loads(state)) for name, _, state in (line.partition(" ") for line in lines)]


def with_hooks_dirs(ctl: Ctl, *directories) -> None:
    ctl.command[1:1] = [flag for directory in directories for flag in ("--hooks-dir", str(directory))]


def test_hook_files_of_several_directories_run_at_their_stages(ctl, tmp_path):
    hooks = Hooks(tmp_path)
    first, second = hooks.directory("first"), hooks.directory("second")
    hooks.add(first, "10-create.json", "createRuntime", ["createRuntime"])
    hooks.add(first, "20-both.json", "both", ["prestart", "poststop"])
    hooks.add(first, "30-masked.json", "from-first", ["createRuntime"])
    hooks.add(second, "30-masked.json", "from-second", ["createRuntime"])  # masks the first's
    with_hooks_dirs(ctl, first, second)
    assert ctl.command[1:5] == ["--hooks-dir", str(first), "--hooks-dir", str(second)]
    ctl("run", "--name", "hooked", "busybox", "true")
    wait_until(lambda: hooks.log.exists() and hooks.log.read_text().count("both") == 2, "the poststop hook to run")
    container_id = ctl.inspect("hooked")["Id"]
    ran = hooks.ran()
    # prestart then createRuntime while the container is created (runc's order), in file-name
    # order within a stage; poststop once it is gone
    assert [name for name, _ in ran] == ["both", "createRuntime", "from-second", "both"]
    assert all(state["id"] == container_id for _, state in ran)
    assert ran[1][1]["status"] == "created" and ran[-1][1]["status"] == "stopped"
    # the hooks are the container's, in its spec: they run again on every start
    ctl("start", "-a", "hooked")
    wait_until(lambda: hooks.log.exists() and hooks.log.read_text().count("both") == 2, "the hooks of the 2nd start")


def test_when_conditions_choose_the_containers(ctl, tmp_path):
    hooks = Hooks(tmp_path)
    directory = hooks.directory("hooks.d")
    stage = ["createRuntime"]  # run before `run` returns: nothing to wait for
    hooks.add(directory, "annotation.json", "annotation", stage,
              {"annotations": {r"^com\.example\.trace$": "^(yes|on)$"}})
    hooks.add(directory, "bind.json", "bind", stage, {"hasBindMounts": True})
    hooks.add(directory, "command.json", "command", stage, {"commands": ["^(/bin/)?true$"]})
    hooks.add(directory, "never.json", "never", stage, {"always": False})
    hooks.add(directory, "all.json", "all-of", stage, {"always": True, "commands": ["true$"],
                                                       "annotations": {"trace": "on"}})
    with_hooks_dirs(ctl, directory)
    ctl("run", "--rm", "--annotation", "com.example.trace=on", "busybox", "echo")
    assert [name for name, _ in hooks.ran()] == ["annotation"]
    ctl("run", "--rm", "--annotation", "com.example.trace=off", "busybox", "echo")
    assert hooks.ran() == []
    ctl("run", "--rm", "-v", f"{tmp_path}:/mnt:ro", "busybox", "echo")
    assert [name for name, _ in hooks.ran()] == ["bind"]  # capsactl's own /etc/hosts binds do not count
    ctl("run", "--rm", "busybox", "true")
    assert [name for name, _ in hooks.ran()] == ["command"]
    ctl("run", "--rm", "--annotation", "com.example.trace=on", "busybox", "/bin/true")
    assert [name for name, _ in hooks.ran()] == ["all-of", "annotation", "command"]
    result = ctl("create", "--annotation", "novalue", "busybox", check=False)
    assert result.returncode == 125 and "--annotation 'novalue': give KEY=VALUE" in result.stderr


def test_invalid_hook_files_are_reported_and_skipped(ctl, tmp_path):
    hooks = Hooks(tmp_path)
    directory = hooks.directory("hooks.d")
    hooks.add(directory, "50-good.json", "good", ["createRuntime"])
    (directory / "10-garbage.json").write_text("\x00 this is not { JSON")
    (directory / "20-version.json").write_text(json.dumps({
        "version": "0.1.0", "hook": str(hooks.script), "stages": ["prestart"]}))
    (directory / "30-nopath.json").write_text(json.dumps({
        "version": "1.0.0", "hook": {"path": "/no/such/hook"}, "when": {"always": True}, "stages": ["prestart"]}))
    (directory / "40-stage.json").write_text(json.dumps({
        "version": "1.0.0", "hook": {"path": str(hooks.script)}, "when": {"always": True}, "stages": ["later"]}))
    (directory / "README").write_text("not a .json file: not a hook file either")
    with_hooks_dirs(ctl, directory)
    result = ctl("run", "--rm", "busybox", "echo", "still runs")
    assert result.stdout == "still runs\n"
    warnings = [line for line in result.stderr.splitlines() if "skipping the OCI hook file" in line]
    assert len(warnings) == 4, result.stderr
    for name, why in (("10-garbage.json", "not JSON"), ("20-version.json", "unsupported version '0.1.0'"),
                      ("30-nopath.json", "/no/such/hook does not exist"), ("40-stage.json", "unknown stage(s) later")):
        assert any(str(directory / name) in line and why in line for line in warnings), (name, result.stderr)
    assert "README" not in result.stderr
    assert [name for name, _ in hooks.ran()] == ["good"]


def test_a_failing_hook_fails_the_start_and_a_missing_directory_is_an_error(ctl, tmp_path):
    hooks = Hooks(tmp_path)
    directory = hooks.directory("hooks.d")
    (directory / "fail.json").write_text(json.dumps({
        "version": "1.0.0", "hook": {"path": "/bin/false"}, "when": {"always": True}, "stages": ["createRuntime"]}))
    with_hooks_dirs(ctl, directory)
    result = ctl("run", "--name", "failing", "busybox", "echo", "never", check=False)
    assert result.returncode != 0
    assert "never" not in result.stdout
    assert "hook" in result.stderr.lower(), result.stderr
    assert ctl.inspect("failing")["State"]["Status"] in ("created", "exited")
    ctl("rm", "failing")  # nothing of it left running (the fixture checks mounts, monitors, cgroups)
    missing = tmp_path / "no-such-dir"
    ctl.command[1:1] = ["--hooks-dir", str(missing)]
    result = ctl("create", "busybox", check=False)
    assert result.returncode == 125 and f"--hooks-dir {missing}: no such directory" in result.stderr
    assert ctl.ps() == []
