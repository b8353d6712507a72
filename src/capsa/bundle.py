"""Build an OCI bundle whose rootfs is Debian's busybox-static: for the first container, tests and benchmarks.

    python -m capsa.bundle DIR [--rootless] [--terminal] [-- ARGS...]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
ROOT_DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root", "home", "var", "run")


def find_busybox() -> str:
    for path in BUSYBOX_CANDIDATES:
        if os.path.isfile(path) and _is_static(path):
            return path
    raise SystemExit("capsa.bundle: a static busybox is needed: apt-get install busybox-static")


def _is_static(path: str) -> bool:
    with open(path, "rb") as f:
        header = f.read(4096)
    # A dynamically linked ELF names its interpreter (PT_INTERP), e.g. /lib64/ld-linux-x86-64.so.2.
    return header.startswith(b"\x7fELF") and b"ld-linux" not in header


def make_rootfs(rootfs: str) -> None:
    busybox = find_busybox()
    for directory in ROOT_DIRS:
        os.makedirs(os.path.join(rootfs, directory), exist_ok=True)
    os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
    target = os.path.join(rootfs, "bin", "busybox")
    shutil.copy2(busybox, target)
    applets = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        link = os.path.join(rootfs, applet)
        if not os.path.lexists(link):
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink("/bin/busybox", link)
    _write(rootfs, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    _write(rootfs, "etc/group", "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n")
    _write(rootfs, "etc/hostname", "capsa\n")


def _write(rootfs: str, path: str, text: str) -> None:
    with open(os.path.join(rootfs, path), "w") as f:
        f.write(text)


def make_bundle(bundle: str, args: list[str] | None = None, rootless: bool = False, terminal: bool = False) -> str:
    from capsa import jsonfast
    from capsa.specgen import default_spec

    os.makedirs(bundle, exist_ok=True)
    make_rootfs(os.path.join(bundle, "rootfs"))
    spec = default_spec(rootless=rootless)
    spec["process"]["terminal"] = terminal
    spec["process"]["args"] = args or ["sh"]
    with open(os.path.join(bundle, "config.json"), "w") as f:
        f.write(jsonfast.dumps_indent(spec) + "\n")
    return bundle


def main(argv: list[str]) -> int:
    args: list[str] = []
    if "--" in argv:
        index = argv.index("--")
        argv, args = argv[:index], argv[index + 1 :]
    options = [a for a in argv if a.startswith("--")]
    positional = [a for a in argv if not a.startswith("--")]
    if len(positional) != 1 or set(options) - {"--rootless", "--terminal"}:
        sys.stderr.write(__doc__)
        return 2
    make_bundle(positional[0], args, rootless="--rootless" in options, terminal="--terminal" in options)
    print(positional[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
