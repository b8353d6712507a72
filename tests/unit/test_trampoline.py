"""The process's one sealed exec trampoline (capsa.trampoline.shared_fd)."""

from __future__ import annotations

import fcntl
import os

import pytest

from capsa import trampoline

pytestmark = pytest.mark.skipif(not trampoline.supported(), reason="the trampoline is x86-64 machine code")


def test_the_same_sealed_fd_serves_every_launch_of_a_process():
    first = trampoline.shared_fd()
    assert trampoline.shared_fd() == first
    seals = fcntl.fcntl(first, fcntl.F_GET_SEALS)
    assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SEAL
    assert fcntl.fcntl(first, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    with pytest.raises(PermissionError):
        os.pwrite(first, b"x", 0)


def test_a_closed_trampoline_whose_number_another_file_took_is_made_again():
    first = trampoline.shared_fd()
    os.close(first)
    impostor = os.open(os.devnull, os.O_RDONLY)  # the lowest free number: the one just closed
    try:
        assert impostor == first
        again = trampoline.shared_fd()
        assert again != impostor
        with open(f"/proc/self/fd/{again}", "rb") as f:
            assert f.read() == trampoline.elf_image()
    finally:
        os.close(impostor)
