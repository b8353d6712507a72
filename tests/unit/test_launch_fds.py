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


def test_close_fds_except_keeps_exactly_the_kept_ones():
    """In a forked child (it closes nearly everything): fds kept at the edges of the gaps stay,
    every other one is closed, the highest included."""
    import os

    from capsa import linux

    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(6)]
    high = os.dup2(fds[0], 900)
    keep = {0, 1, 2, fds[1], fds[2], fds[4]}
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            linux.close_fds_except(keep | {w})
            os.write(w, repr([fd for fd in range(1024) if _is_open(fd)]).encode())
        finally:
            os._exit(0)
    os.close(w)
    reported = os.read(r, 4096).decode()
    os.waitpid(pid, 0)
    os.close(r)
    for fd in [*fds, high]:
        os.close(fd)
    assert set(eval(reported)) == keep | {w}  # noqa: S307 - our own child's repr of a list of ints
