"""Idmapped bind mounts (runtime-spec 1.3: a mount's uidMappings/gidMappings, idmap, ridmap):
ownership as the container sees it, and as files created through the mount land on the host."""

from __future__ import annotations

import os
import subprocess

import pytest


def _owned_dir(path, uid: int, gid: int) -> str:
    os.makedirs(path / "sub", exist_ok=True)
    (path / "file").write_text("x")
    for entry in (path, path / "sub", path / "file"):
        os.chown(entry, uid, gid)
    return str(path)


def _mapping(container_id: int, host_id: int, size: int = 1) -> list[dict]:
    return [{"containerID": container_id, "hostID": host_id, "size": size}]


def _bind(source: str, destination: str, options: list[str], uid=None, gid=None) -> dict:
    mount = {"destination": destination, "type": "bind", "source": source, "options": options}
    if uid is not None:
        mount["uidMappings"], mount["gidMappings"] = uid, gid
    return mount


def test_mappings_show_the_owner_mapped_and_store_new_files_unmapped(bundle, tmp_path):
    source = _owned_dir(tmp_path / "data", 1000, 1001)
    # On disk 1000 (group 1001) -> 0 through the mount; the container (no user namespace) sees 0.
    bundle.config["mounts"].append(_bind(source, "/data", ["bind", "idmap"], _mapping(1000, 0), _mapping(1001, 0)))
    # Mappings without idmap/ridmap are an idmap mount too (as runc reads them).
    bundle.config["mounts"].append(_bind(source, "/plain", ["bind"], _mapping(1000, 0), _mapping(1001, 0)))
    out = bundle.sh("stat -c '%u:%g' /data /data/file /plain; touch /data/new; mkdir /data/newdir; "
                    "ls -l /proc/$$/fd").stdout.splitlines()
    assert out[:3] == ["0:0", "0:0", "0:0"]
    # The mounts' trees (host fds) are closed: above stdio, only ls's own directory (a nofork applet).
    fds = {line.split()[-3]: line.split()[-1] for line in out[3:] if "->" in line}
    assert set(fds) - {"0", "1", "2"} <= {"3"} and fds.get("3", "/proc/").startswith("/proc/"), fds
    for name in ("new", "newdir"):
        info = os.stat(os.path.join(source, name))
        assert (info.st_uid, info.st_gid) == (1000, 1001)


def test_idmap_without_mappings_takes_the_user_namespaces(bundle, tmp_path):
    """The host's root's files show as the container's root's: without idmap its root (host id
    100000) would see them as nobody, and could not write to them."""
    source = _owned_dir(tmp_path / "data", 0, 0)
    os.chmod(source, 0o755)
    bundle.use_user_namespace(100000)
    bundle.config["mounts"].append(_bind(source, "/data", ["rbind", "idmap"]))
    bundle.config["mounts"].append(_bind(source, "/unmapped", ["rbind"]))
    out = bundle.sh("stat -c %u /data /data/file /unmapped; touch /data/new && echo wrote").stdout.split()
    assert out == ["0", "0", "65534", "wrote"]
    info = os.stat(os.path.join(source, "new"))
    assert (info.st_uid, info.st_gid) == (0, 0)


@pytest.fixture
def tree_with_submount(tmp_path):
    """A directory owned by 1000 with a tmpfs owned by 1000 mounted on its `sub` (removed after)."""
    source = _owned_dir(tmp_path / "tree", 1000, 1000)
    sub = os.path.join(source, "sub")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "uid=1000,gid=1000,mode=755", "tmpfs", sub], check=True)
    yield source
    subprocess.run(["umount", sub], check=True)


def test_ridmap_maps_the_submounts_of_an_rbind_and_idmap_only_the_top(bundle, tree_with_submount):
    mapping = _mapping(1000, 0)
    bundle.config["mounts"].append(_bind(tree_with_submount, "/r", ["rbind", "ridmap"], mapping, mapping))
    bundle.config["mounts"].append(_bind(tree_with_submount, "/i", ["rbind", "idmap"], mapping, mapping))
    out = bundle.sh("stat -c %u /r /r/sub /i /i/sub").stdout.split()
    assert out == ["0", "0", "0", "1000"]


def test_idmapped_mount_options_still_apply(bundle, tmp_path):
    source = _owned_dir(tmp_path / "data", 1000, 1000)
    bundle.config["mounts"].append(_bind(source, "/data", ["bind", "idmap", "ro", "nosuid"], _mapping(1000, 0),
                                         _mapping(1000, 0)))
    result = bundle.sh("stat -c %u /data; grep ' /data ' /proc/self/mountinfo; touch /data/new", check=False)
    owner, mountinfo = result.stdout.splitlines()[:2]
    assert owner == "0" and " ro," in mountinfo and "nosuid" in mountinfo and "idmapped" in mountinfo
    assert result.returncode != 0 and "Read-only file system" in result.stderr


def _refused(bundle, *needles: str) -> None:
    result = bundle.run("true", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result
    for needle in needles:
        assert needle in result.stderr, result.stderr
    assert bundle.capsa("list", "-q").stdout == ""


def test_idmap_without_mappings_or_user_namespace_is_a_config_error(bundle, tmp_path):
    bundle.config["mounts"].append(_bind(_owned_dir(tmp_path / "d", 0, 0), "/data", ["bind", "idmap"]))
    _refused(bundle, f"mounts[{len(bundle.config['mounts']) - 1}].uidMappings", "user namespace")


def test_idmapped_new_filesystem_is_refused(bundle):
    bundle.config["mounts"].append({"destination": "/t", "type": "tmpfs", "source": "tmpfs", "options": ["idmap"],
                                    "uidMappings": _mapping(0, 1000), "gidMappings": _mapping(0, 1000)})
    _refused(bundle, "bind mounts only")


def test_filesystem_that_cannot_be_idmapped_names_the_mount_and_the_reason(bundle):
    bundle.config["mounts"].append(_bind("/proc", "/hostproc", ["rbind", "ridmap"], _mapping(0, 1000), _mapping(0, 1000)))
    _refused(bundle, f"mounts[{len(bundle.config['mounts']) - 1}]", "cannot idmap /proc", "cannot be idmapped")


def test_overlapping_mapping_is_refused_with_the_field(bundle, tmp_path):
    overlapping = [{"containerID": 0, "hostID": 1000, "size": 10}, {"containerID": 5, "hostID": 2000, "size": 10}]
    bundle.config["mounts"].append(_bind(_owned_dir(tmp_path / "d", 0, 0), "/data", ["bind"], overlapping,
                                         _mapping(0, 1000)))
    _refused(bundle, f"mounts[{len(bundle.config['mounts']) - 1}].uidMappings", "ranges must not overlap")


def test_restore_refuses_an_idmapped_mount(bundle, tmp_path):
    bundle.config["mounts"].append(_bind(_owned_dir(tmp_path / "d", 0, 0), "/data", ["bind"], _mapping(0, 1000),
                                         _mapping(0, 1000)))
    bundle.write()
    result = bundle.capsa("restore", "--image-path", str(tmp_path), "--bundle", bundle.path, "r1", check=False)
    assert result.returncode == 1 and "idmapped mount" in result.stderr and "CRIU" in result.stderr
