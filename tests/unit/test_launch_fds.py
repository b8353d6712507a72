"""launch._move_above: the launch's own fds moved out of the range a container inherits."""


def test_move_above_copies_low_fds_up_and_closes_the_originals():
    import os

    from capsa.launch import _move_above

    r, w = os.pipe()
    low = min(r, w)
    moved = _move_above([low, -1], low + 50)
    assert moved[0] >= low + 50 and moved[1] == -1
    assert not _is_open(low)
    os.close(moved[0])
    os.close(max(r, w))


def test_move_above_failing_midway_closes_its_copies_and_keeps_the_originals():
    import os

    import pytest

    from capsa.launch import _move_above

    r, w = os.pipe()
    os.close(w)  # a closed number: its copy fails with EBADF after r's copy was made
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError):
        _move_above([r, w], max(r, w) + 50)
    assert _is_open(r)  # the caller still owns it and closes it once
    assert set(os.listdir("/proc/self/fd")) == before  # no copy left behind
    os.close(r)


def _is_open(fd: int) -> bool:
    import os

    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
