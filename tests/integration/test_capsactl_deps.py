"""capsactl's --requires end to end, as root (issue 18, deps part): a container's dependencies
are started before it, recursively, in graph order; a cycle or a missing dependency is an error
naming the containers, and nothing is started; rm refuses (with --force too, as podman) while
other containers require the one named; rm --depend removes them first; inspect and ps show the
dependencies."""

from __future__ import annotations

import json
import os
import sqlite3

# ruff: noqa: F811 - the fixtures imported from test_capsactl_containers are test parameters here
from test_capsactl_containers import Ctl, busybox_rootfs, ctl  # noqa: F401 - fixtures

SLEEP = ("busybox", "sleep", "1000")


def started_names(ctl: Ctl) -> list[str]:
    """The containers' `start` events, in the order they were emitted."""
    return [e["Name"] for e in ctl.events() if e["Type"] == "container" and e["Status"] == "start"]


def set_dependencies(ctl: Ctl, name: str, dependencies: list[str]) -> None:
    """Rewrite a container's recorded dependencies in the store (what no command can make: a
    cycle, or a dependency that is gone), to see what start makes of it."""
    db = sqlite3.connect(os.path.join(ctl.root, "db.sqlite"))
    try:
        (config,) = db.execute("SELECT config FROM containers WHERE name = ?", (name,)).fetchone()
        config = json.loads(config)
        config["Dependencies"] = dependencies
        with db:
            db.execute("UPDATE containers SET config = ? WHERE name = ?", (json.dumps(config), name))
    finally:
        db.close()


def test_start_starts_the_dependencies_first_recursively(ctl):
    ctl("create", "--name", "db", *SLEEP)
    ctl("create", "--name", "cache", *SLEEP)
    ctl("create", "--name", "app", "--requires", "db,cache", *SLEEP)
    ctl("create", "--name", "web", "--requires", "app", *SLEEP)
    ctl("start", "web")
    assert {c["Names"][0]: c["State"] for c in ctl.ps()} == {"db": "running", "cache": "running",
                                                             "app": "running", "web": "running"}
    assert started_names(ctl) == ["db", "cache", "app", "web"]  # depth-first, in --requires order
    ids = {name: ctl.inspect(name)["Id"] for name in ("db", "cache", "app", "web")}
    assert ctl.inspect("app")["Dependencies"] == [ids["db"], ids["cache"]]
    assert ctl.inspect("db")["Dependencies"] == []
    shown = ctl("ps", "-a", "--format", "{{.Names}} [{{.Dependencies}}]").stdout.splitlines()
    assert sorted(shown) == ["app [db,cache]", "cache []", "db []", "web [app]"]
    table = ctl("ps", "-a", "--format", "table {{.Names}}\t{{.Dependencies}}").stdout
    assert table.splitlines()[0].split() == ["NAMES", "DEPENDENCIES"]


def test_run_starts_dependencies_and_leaves_running_ones_alone(ctl):
    ctl("run", "-d", "--name", "db", *SLEEP)
    pid = ctl.inspect("db")["State"]["Pid"]
    ctl("stop", "-t", "0", "db")
    ctl("create", "--name", "queue", *SLEEP)
    ctl("start", "db")
    pid = ctl.inspect("db")["State"]["Pid"]
    ctl("run", "-d", "--name", "worker", "--requires", "db", "--requires", "queue", *SLEEP)
    assert ctl.inspect("db")["State"]["Pid"] == pid  # running already: not restarted
    assert ctl.inspect("queue")["State"]["Status"] == "running"
    # a foreground run too; and a stopped dependency is started again
    ctl("stop", "-t", "0", "queue")
    result = ctl("run", "--rm", "--requires", "queue", "busybox", "echo", "ran")
    assert result.stdout == "ran\n"
    assert ctl.inspect("queue")["State"]["Status"] == "running"


def test_a_missing_dependency_at_create_is_an_error_and_makes_nothing(ctl):
    ctl("create", "--name", "db", *SLEEP)
    result = ctl("create", "--name", "app", "--requires", "db,nosuch", *SLEEP, check=False)
    assert result.returncode == 125
    assert "--requires nosuch: no such container" in result.stderr
    assert [c["Names"][0] for c in ctl.ps()] == ["db"]


def test_a_cycle_or_a_missing_dependency_at_start_names_them_and_starts_nothing(ctl):
    ctl("create", "--name", "a", *SLEEP)
    ctl("create", "--name", "b", "--requires", "a", *SLEEP)
    ctl("create", "--name", "c", "--requires", "b", *SLEEP)
    set_dependencies(ctl, "a", [ctl.inspect("c")["Id"]])
    result = ctl("start", "c", check=False)
    assert result.returncode == 125
    assert "dependency cycle: c -> b -> a -> c" in result.stderr
    assert {c["State"] for c in ctl.ps()} == {"created"}
    set_dependencies(ctl, "a", ["0123456789ab" * 5 + "0123"])
    result = ctl("start", "c", check=False)
    assert result.returncode == 125
    assert "container a requires 0123456789ab, which does not exist" in result.stderr
    assert {c["State"] for c in ctl.ps()} == {"created"}


def test_a_dependency_that_fails_to_start_fails_the_start(ctl):
    ctl("create", "--name", "broken", "busybox", "/no/such/command")
    ctl("create", "--name", "app", "--requires", "broken", *SLEEP)
    result = ctl("start", "app", check=False)
    assert result.returncode != 0
    assert "cannot start app: its dependency broken did not start" in result.stderr
    assert ctl.inspect("app")["State"]["Status"] == "created"


def test_rm_refuses_while_required_even_forced_and_depend_removes_dependents_first(ctl):
    ctl("create", "--name", "db", *SLEEP)
    ctl("create", "--name", "app", "--requires", "db", *SLEEP)
    ctl("create", "--name", "web", "--requires", "app", *SLEEP)
    ctl("create", "--name", "other", *SLEEP)
    ctl("start", "web")
    for flags in ((), ("-f",), ("-f", "-t", "0")):
        result = ctl("rm", *flags, "db", check=False)
        assert result.returncode == 125
        assert "container db has dependent containers which must be removed before it: app" in result.stderr
    assert ctl.inspect("db")["State"]["Status"] == "running"  # -f did not even stop it
    ids = [ctl.inspect(name)["Id"] for name in ("web", "app", "db")]
    result = ctl("rm", "-f", "-t", "0", "--depend", "db")
    assert result.stdout.split() == ids  # dependents first
    assert [c["Names"][0] for c in ctl.ps()] == ["other"]


def test_rm_all_removes_dependents_before_their_dependencies(ctl):
    ctl("create", "--name", "db", *SLEEP)
    ctl("create", "--name", "app", "--requires", "db", *SLEEP)
    ctl("start", "app")
    ctl("rm", "-a", "-f", "-t", "0")
    assert ctl.ps() == []
    ctl("create", "--name", "db", *SLEEP)
    ctl("create", "--name", "app", "--requires", "db", *SLEEP)
    assert ctl("container", "prune", "-f").returncode == 0
    assert ctl.ps() == []
