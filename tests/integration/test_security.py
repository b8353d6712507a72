"""Attacks on the runtime from inside the container, and that they fail."""

from __future__ import annotations

import hashlib
import os
import sys

EVIL = "#!/proc/self/exe\nimport os, sys\nprint('HOST INTERPRETER RAN')\n"


def _python_digest() -> str:
    with open(os.path.realpath(sys.executable), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _plant(bundle) -> None:
    path = os.path.join(bundle.rootfs, "evil")
    with open(path, "w") as f:
        f.write(EVIL)
    os.chmod(path, 0o755)


def test_proc_self_exe_script_cannot_reach_the_runtime_binary(bundle):
    """CVE-2019-5736 class: `#!/proc/self/exe` must not run the runtime's (host) binary."""
    before = _python_digest()
    _plant(bundle)
    result = bundle.run("/evil", check=False)
    assert "HOST INTERPRETER RAN" not in result.stdout
    assert result.returncode == 126  # the sealed trampoline refuses to act as an interpreter
    assert _python_digest() == before


def test_proc_self_exe_script_through_exec(bundle):
    _plant(bundle)
    bundle.set_args("sleep", "60")
    bundle.create("c1")
    bundle.capsa("start", "c1")
    result = bundle.capsa("exec", "c1", "/evil", check=False)
    assert "HOST INTERPRETER RAN" not in result.stdout and result.returncode == 126


def test_running_program_exe_is_not_the_runtime(bundle):
    out = bundle.sh("readlink /proc/$$/exe; true").stdout.strip()
    assert out == "/bin/busybox"
