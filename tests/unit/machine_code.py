"""The check that an embedded machine code is its assembly source assembled (GNU as): shared by
the tests of the waiter, the planned init and the spawner."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

needs_gnu_as = pytest.mark.skipif(not (shutil.which("as") and shutil.which("objcopy")), reason="GNU as and objcopy not here")


def assembled(module, source_name: str, checkout_dir: str, tmp_path) -> bytes:
    """The .text of `source_name` (next to `module`, or in the checkout's `checkout_dir` for an
    installed copy without it), assembled."""
    source = os.path.join(os.path.dirname(module.__file__), source_name)
    if not os.path.exists(source):
        source = os.path.join(os.path.dirname(__file__), "..", "..", checkout_dir, source_name)
    subprocess.run(["as", "--64", "-o", str(tmp_path / "code.o"), source], check=True)
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(tmp_path / "code.o"), str(tmp_path / "code.bin")],
                   check=True)
    return (tmp_path / "code.bin").read_bytes()
