"""The cgroup driver contract: every driver implements the whole interface, the state record
round trip (old records included), ownership decisions, the paths of nested cgroups, and no
import cycle inside the package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import capsa.cgroups
from capsa import cgroups
from capsa.cgroups import CGROUPFS_V1, CGROUPFS_V2, SYSTEMD, Cgroup, CgroupError
from capsa.cgroups.systemd import (
    SystemdV1Cgroup,
    SystemdV1Slice,
    SystemdV2Cgroup,
    SystemdV2Slice,
    _parent_slice,
)
from capsa.cgroups.v1 import V1Cgroup
from capsa.cgroups.v2 import V2Cgroup
from capsa.errors import ConfigError

V1_PATHS = {"memory": "/sys/fs/cgroup/memory/sb", "cpu,cpuacct": "/sys/fs/cgroup/cpu,cpuacct/sb",
            "": "/sys/fs/cgroup/unified/sb"}
V2_PATHS = {"": "/sys/fs/cgroup/sb"}
DRIVERS = [V1Cgroup, V2Cgroup, SystemdV1Cgroup, SystemdV2Cgroup, SystemdV1Slice, SystemdV2Slice]


def _abstract(cls: type) -> set[str]:
    return {name for name in dir(cls) if getattr(getattr(cls, name), "__isabstractmethod__", False)}


def test_every_driver_implements_the_whole_interface():
    assert {"create", "apply", "add", "self_join_files", "path_for", "pids", "can_freeze", "is_frozen", "freeze",
            "thaw", "stats", "oom_watch"} == _abstract(Cgroup)
    for cls in DRIVERS:
        assert not _abstract(cls), f"{cls.__name__} leaves {sorted(_abstract(cls))} unimplemented"
        assert isinstance(cls({}), Cgroup)
    # Every driver the package has is checked here.
    import capsa.cgroups.systemd
    import capsa.cgroups.v1
    import capsa.cgroups.v2

    found = {obj for module in (capsa.cgroups.v1, capsa.cgroups.v2, capsa.cgroups.systemd)
             for obj in vars(module).values() if isinstance(obj, type) and issubclass(obj, Cgroup) and obj is not Cgroup}
    assert found == set(DRIVERS)


@pytest.mark.parametrize("cgroup, driver", [
    (V1Cgroup(dict(V1_PATHS), created=V1_PATHS), CGROUPFS_V1),
    (V2Cgroup(dict(V2_PATHS)), CGROUPFS_V2),
    (SystemdV2Cgroup({"": "/sys/fs/cgroup/system.slice/capsa-x.scope"}, "capsa-x.scope", "system.slice",
                     created=[""]), SYSTEMD),
    (SystemdV2Slice({"": "/sys/fs/cgroup/capsa.slice/capsa-sb.slice"}, "capsa-sb.slice", "capsa.slice"), SYSTEMD),
    (SystemdV1Slice(dict(V1_PATHS), "capsa-sb.slice", "capsa.slice", created=["memory"]), SYSTEMD),
])
def test_record_round_trip(cgroup, driver):
    record = cgroup.record()
    assert record["cgroupDriver"] == driver and record["cgroupPaths"] == cgroup.paths
    back = cgroups.from_record(record)
    assert type(back) is type(cgroup)
    assert back.paths == cgroup.paths and back.created == cgroup.created and back.owned == cgroup.owned
    assert getattr(back, "unit", None) == getattr(cgroup, "unit", None)
    assert getattr(back, "slice", None) == getattr(cgroup, "slice", None)


def test_the_ownership_record_is_compact():
    assert V2Cgroup(dict(V2_PATHS), created=[""]).record()["cgroupOwned"] is True
    assert V2Cgroup(dict(V2_PATHS)).record()["cgroupOwned"] is False
    assert V1Cgroup(dict(V1_PATHS), created=["", "memory"]).record()["cgroupOwned"] == ["", "memory"]


def test_records_of_the_previous_version():
    """No cgroupDriver, no cgroupOwned: the driver from the paths, all of it owned (capsa then
    removed every directory on delete)."""
    v1 = cgroups.from_record({"cgroupPaths": dict(V1_PATHS)})
    assert type(v1) is V1Cgroup and v1.owned
    v2 = cgroups.from_record({"cgroupPaths": dict(V2_PATHS)})
    assert type(v2) is V2Cgroup and v2.owned
    scope = cgroups.from_record({"cgroupPaths": {"": "/sys/fs/cgroup/system.slice/capsa-a.scope"},
                                 "systemdUnit": "capsa-a.scope", "systemdSlice": "system.slice"})
    assert type(scope) is SystemdV2Cgroup and scope.owned and scope.unit == "capsa-a.scope"
    assert type(cgroups.from_record({"cgroupPaths": dict(V1_PATHS), "systemdUnit": "a.scope"})) is SystemdV1Cgroup
    assert cgroups.from_record({"cgroupPaths": {}}) is None
    assert cgroups.from_record({"id": "no-cgroup-key"}) is None


def test_ownership_per_hierarchy(tmp_path):
    """create owns what it makes and joins what is there; destroy removes only what it owns."""
    existing = tmp_path / "memory" / "c"
    existing.mkdir(parents=True)
    (existing / "sub").mkdir()  # e.g. another member's cgroup below a shared one
    paths = {"memory": str(existing), "pids": str(tmp_path / "pids" / "c")}
    cgroup = V1Cgroup(dict(paths))
    assert cgroup.create() == []
    assert cgroup.created == {"pids"} and not cgroup.owned
    assert cgroup.record()["cgroupOwned"] == ["pids"]
    cgroup.create()  # again (rootless create, then launch): what it made stays its own
    assert cgroup.created == {"pids"}
    cgroups.from_record(cgroup.record()).destroy()
    assert existing.is_dir() and (existing / "sub").is_dir()
    assert not (tmp_path / "pids" / "c").exists() and (tmp_path / "pids").is_dir()


def test_a_sub_cgroup_is_joined_and_a_child_is_not_made_yet(tmp_path):
    top = V1Cgroup({"memory": str(tmp_path)}, created=["memory"])
    (tmp_path / "exec").mkdir()
    sub = top.sub("exec")
    assert sub.paths == {"memory": str(tmp_path / "exec")} and not sub.created
    child = top.child("m1")
    assert child.paths == {"memory": str(tmp_path / "m1")} and not child.created and not child.exists()
    with pytest.raises(CgroupError, match="does not exist"):
        top.sub("missing")


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/a"])
def test_child_names_are_one_component(name):
    with pytest.raises(CgroupError, match="one path component"):
        V2Cgroup(dict(V2_PATHS)).child(name)


def test_child_paths_per_driver():
    v1 = V1Cgroup(dict(V1_PATHS)).child("m1")
    assert type(v1) is V1Cgroup and v1.paths == {k: f"{d}/m1" for k, d in V1_PATHS.items()}
    v2 = V2Cgroup(dict(V2_PATHS)).child("m1")
    assert type(v2) is V2Cgroup and v2.paths == {"": "/sys/fs/cgroup/sb/m1"}
    # Below a scope (Delegate=true) the directories are cgroupfs ones, no unit.
    scope = SystemdV2Cgroup({"": "/sys/fs/cgroup/system.slice/capsa-x.scope"}, "capsa-x.scope", "system.slice")
    inner = scope.child("inner")
    assert type(inner) is V2Cgroup and inner.paths == {"": "/sys/fs/cgroup/system.slice/capsa-x.scope/inner"}
    # A slice's children are scopes in it.
    sandbox = SystemdV2Slice({"": "/sys/fs/cgroup/capsa.slice/capsa-sb.slice"}, "capsa-sb.slice", "capsa.slice")
    member = sandbox.child("capsa-m1")
    assert type(member) is SystemdV2Cgroup and member.placed_by_manager
    assert (member.unit, member.slice) == ("capsa-m1.scope", "capsa-sb.slice")
    assert member.paths == {"": "/sys/fs/cgroup/capsa.slice/capsa-sb.slice/capsa-m1.scope"}
    assert sandbox.child("x.scope").unit == "x.scope"
    v1_member = SystemdV1Slice(dict(V1_PATHS), "capsa-sb.slice", "capsa.slice").child("m")
    assert type(v1_member) is SystemdV1Cgroup and v1_member.paths["memory"] == "/sys/fs/cgroup/memory/sb/m.scope"


def test_parent_slice():
    assert _parent_slice("a-b-c.slice") == "a-b.slice"
    assert _parent_slice("capsa.slice") == "-.slice"


@pytest.mark.parametrize("path", ["", "/", "//", "a/../b", "/../x"])
def test_a_parent_must_be_below_the_root(path):
    with pytest.raises(ConfigError, match="cgroup parent"):
        cgroups.parent(path)


def test_a_unit_capsa_did_not_start_is_never_stopped():
    """A scope not started (or whose name systemd said was taken) is someone else's: destroy
    leaves it without asking systemd anything (no bus here)."""
    SystemdV2Cgroup({"": "/sys/fs/cgroup/system.slice/capsa-x.scope"}, "capsa-x.scope", "system.slice").destroy()
    SystemdV2Slice({"": "/sys/fs/cgroup/capsa.slice/capsa-sb.slice"}, "capsa-sb.slice", "capsa.slice").destroy()


def test_no_import_cycle_in_the_package():
    """The driver modules import common.py, never the package's __init__ that picks them; no
    module of the package reaches itself again, at module level or lazily (TYPE_CHECKING left out)."""
    assert _cycle(Path(capsa.cgroups.__file__).parent) is None


def test_the_cycle_check_sees_a_lazy_import(tmp_path):
    """What the package had: the base class picking its subclasses with imports inside its methods."""
    (tmp_path / "common.py").write_text("def for_spec():\n    from capsa.cgroups.v1 import V1Cgroup\n")
    (tmp_path / "v1.py").write_text("from capsa.cgroups.common import Cgroup\n")
    assert _cycle(tmp_path) == "capsa.cgroups.common"
    (tmp_path / "common.py").write_text("if TYPE_CHECKING:\n    from capsa.cgroups import v1\n")
    assert _cycle(tmp_path) is None


def _cycle(package: Path) -> str | None:
    """A module of `package` that imports itself through others, if any."""
    graph = {_module(p): _imports(p, package) for p in package.glob("*.py")}
    for start in sorted(graph):
        seen, stack = set(), list(graph[start])
        while stack:
            current = stack.pop()
            if current == start:
                return start
            if current not in seen:
                seen.add(current)
                stack += graph.get(current, ())
    return None


def _module(path: Path) -> str:
    return "capsa.cgroups" if path.stem == "__init__" else f"capsa.cgroups.{path.stem}"


def _imports(path: Path, package: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
                 for statement in node.body for n in ast.walk(statement)}
    submodules = {p.stem for p in package.glob("*.py")}
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "capsa.cgroups":
            found |= {f"capsa.cgroups.{a.name}" if a.name in submodules else "capsa.cgroups" for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("capsa.cgroups."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("capsa.cgroups")}
    found.discard(_module(path))
    return found


def test_a_container_limited_to_some_controllers_gets_only_their_v1_hierarchies():
    from capsa.cgroups import holding

    found = {"/sys/fs/cgroup/cpu,cpuacct": "cpu,cpuacct", "/sys/fs/cgroup/memory": "memory",
             "/sys/fs/cgroup/blkio": "blkio", "/sys/fs/cgroup/systemd": "name=systemd", "/sys/fs/cgroup/unified": ""}
    assert holding(found, frozenset({"cpuacct", "memory"})) == {"/sys/fs/cgroup/cpu,cpuacct": "cpu,cpuacct",
                                                               "/sys/fs/cgroup/memory": "memory"}
    assert holding(found, frozenset()) == {}
