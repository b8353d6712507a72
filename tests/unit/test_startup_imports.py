"""create, run and exec must import neither os nor ctypes: each costs every such call start-up time.

`import ctypes` is 10.6M instructions (it builds dozens of classes and imports os), `import os`
4.4M (the collections ABCs); docs/performance.md has the measures. The modules of those paths use
`posix`, capsa.posixlite and capsa.linux's `_ctypes` types instead, the cgroups package included;
tests/integration/test_lifecycle.py checks the imports of real calls.
"""

import subprocess
import sys
from pathlib import Path

import capsa

# Every module create, run and exec may load, with the optional parts (terminal, seccomp, LSM,
# user namespaces, hooks, device filters).
MODULES = [
    "capsa.cli", "capsa.cli.create", "capsa.cli.run", "capsa.cli.exec", "capsa.terminal", "capsa.process", "capsa.cli.log",
    "capsa.sandbox",
    "capsa.container", "capsa.state", "capsa.spec", "capsa.rootless", "capsa.idmap", "capsa.idmapped", "capsa.launch",
    "capsa.init", "capsa.rootfs", "capsa.caps", "capsa.linux", "capsa.linux.tty", "capsa.linux.seccomp",
    "capsa.linux.bpf", "capsa.seccomp", "capsa.lsm",
    "capsa.console", "capsa.trampoline", "capsa.syncpipe", "capsa.hooks", "capsa.mountopts", "capsa.procfs",
    "capsa.cgroups", "capsa.cgroups.common", "capsa.cgroups.v1", "capsa.cgroups.v1_resources", "capsa.cgroups.v2",
    "capsa.cgroups.v2_resources", "capsa.cgroups.devices_bpf",
]
# errno, stat, resource and termios: capsa.errors names the errno values, capsa.linux has the rest (0.26M,
# 0.39M, 0.51M and 0.82M instructions to import).
HEAVY = ["os", "ctypes", "posixpath", "subprocess", "struct", "errno", "stat", "resource", "termios"]


def test_create_run_exec_modules_import_neither_os_nor_ctypes():
    package_parent = str(Path(capsa.__file__).resolve().parent.parent)
    code = (
        f"import sys; sys.path.insert(0, {package_parent!r})\n"
        f"for name in {MODULES!r}: __import__(name)\n"
        f"print(' '.join(sorted(name for name in {HEAVY!r} if name in sys.modules)))\n"
    )
    # -I -S: as the launcher runs (no site, which would import os itself).
    result = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == []


def test_linux_calls_work_without_ctypes():
    """capsa.linux's _ctypes types make real calls: capget, and an errno turned into OSError."""
    package_parent = str(Path(capsa.__file__).resolve().parent.parent)
    code = (
        f"import sys; sys.path.insert(0, {package_parent!r})\n"
        "from capsa import linux\n"
        "assert linux.capget_permitted() >= 0\n"
        "try:\n"
        "    linux.umount2('/capsa-no-such-mount-point')\n"
        "except OSError as err:\n"
        "    assert err.errno in (1, 2, 22) and err.filename == '/capsa-no-such-mount-point', err\n"
        "else:\n"
        "    raise AssertionError('umount2 of a missing path succeeded')\n"
        "print('ctypes' in sys.modules, 'os' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
