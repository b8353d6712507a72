"""capsa.linux.openat2 resolving ".." inside a root while the host renames files: the kernel
answers EAGAIN when a rename or a mount anywhere may have raced with the ".." (openat2(2): "the
caller may choose to retry"); a busy host (containers starting) does that all the time."""

from __future__ import annotations

import os
import subprocess
import sys

from capsa import linux


def test_dot_dot_in_the_root_is_resolved_while_the_host_renames(tmp_path):
    os.makedirs(tmp_path / "root" / "x")
    os.makedirs(tmp_path / "root" / "y")
    (tmp_path / "a").write_text("")
    renamer = subprocess.Popen([sys.executable, "-c", f"""
import os
a, b = {str(tmp_path / 'a')!r}, {str(tmp_path / 'b')!r}
print(flush=True)
while True:
    os.rename(a, b)
    os.rename(b, a)
"""], stdout=subprocess.PIPE)
    root = os.open(tmp_path / "root", os.O_PATH | os.O_CLOEXEC)
    try:
        renamer.stdout.readline()  # renaming
        for _ in range(3000):
            os.close(linux.openat2(root, "x/../y", os.O_PATH, linux.RESOLVE_IN_ROOT))
    finally:
        renamer.kill()
        renamer.wait()
        renamer.stdout.close()
        os.close(root)
