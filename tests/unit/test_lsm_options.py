"""capsa.lsm: the mount label option."""

from capsa import lsm


def test_mount_label_goes_to_labelled_filesystems_only():
    assert lsm.mount_data("size=65536k", "tmpfs", "system_u:object_r:container_file_t:s0") == \
        'size=65536k,context="system_u:object_r:container_file_t:s0"'
    assert lsm.mount_data("", "devpts", "l") == 'context="l"'
    assert lsm.mount_data("", "proc", "l") == ""
    assert lsm.mount_data("mode=755", "tmpfs", None) == "mode=755"
