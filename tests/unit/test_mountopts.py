from __future__ import annotations

from capsa import mountopts as m


def test_flags_and_data():
    parsed = m.parse_mount_options(["nosuid", "noexec", "nodev", "mode=755", "size=65536k"])
    assert parsed.flags == m.MS_NOSUID | m.MS_NOEXEC | m.MS_NODEV
    assert parsed.data == "mode=755,size=65536k"
    assert not parsed.is_bind


def test_bind_variants():
    assert m.parse_mount_options(["bind"]).is_bind
    assert not m.parse_mount_options(["bind"]).recursive_bind
    assert m.parse_mount_options(["rbind", "ro"]).recursive_bind
    assert m.parse_mount_options(["rbind", "ro"]).flags & m.MS_RDONLY


def test_later_option_wins():
    assert not m.parse_mount_options(["ro", "rw"]).flags & m.MS_RDONLY
    assert m.parse_mount_options(["rw", "ro"]).flags & m.MS_RDONLY
    parsed = m.parse_mount_options(["noatime", "atime"])
    assert not parsed.flags & m.MS_NOATIME and parsed.clear & m.MS_NOATIME


def test_propagation_in_order():
    parsed = m.parse_mount_options(["rprivate", "shared"])
    assert parsed.propagation == [m.MS_PRIVATE | m.MS_REC, m.MS_SHARED]


def test_recursive_attributes():
    parsed = m.parse_mount_options(["rro", "rnosuid", "rexec"])
    assert parsed.recursive_set == m.MOUNT_ATTR_RDONLY | m.MOUNT_ATTR_NOSUID
    assert parsed.recursive_clear == m.MOUNT_ATTR_NOEXEC
    atime = m.parse_mount_options(["rnoatime"])
    assert atime.recursive_set == m.MOUNT_ATTR_NOATIME and atime.recursive_clear == m.MOUNT_ATTR__ATIME


def test_extensions_never_reach_the_kernel():
    parsed = m.parse_mount_options(["idmap", "tmpcopyup", "size=1m"])
    assert parsed.extensions == ["idmap", "tmpcopyup"]
    assert parsed.data == "size=1m"


def test_known_options_cover_tables():
    known = m.known_options()
    for option in ("ro", "rbind", "rprivate", "rro", "rnoatime", "nosymfollow"):
        assert option in known
    # capsa interprets idmap and ridmap (idmapped mounts); tmpcopyup it refuses, so it is not listed.
    assert "idmap" in known and "ridmap" in known and "tmpcopyup" not in known


def test_idmapped_mounts_are_the_options_or_mappings():
    mapping = [{"containerID": 0, "hostID": 1000, "size": 1}]
    assert m.is_idmapped({"destination": "/a", "options": ["rbind", "ridmap"]})
    assert m.is_idmapped({"destination": "/a", "options": ["bind", "idmap"]})
    # Mappings without the option: an idmap mount, as runc reads them.
    assert m.is_idmapped({"destination": "/a", "options": ["bind"], "uidMappings": mapping, "gidMappings": mapping})
    assert not m.is_idmapped({"destination": "/a", "options": ["bind", "ro"]})
    assert not m.is_idmapped({"destination": "/a"})
