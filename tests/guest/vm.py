"""The guest test tier: boot Debian 12's own kernel under QEMU and run a command in it.

Why: this host has cgroup v1 controllers only (and a kernel too new for Debian's CRIU). A guest
with cgroup2 as its only hierarchy shows capsa's v2 support for real. The guest sees the host's
whole file system read-only over virtio-9p with a tmpfs overlay on top, so it runs the very same
checkout, .venv and Debian packages as the host, and nothing is installed into an image.

    host                                   guest (Linux 6.1, TCG)
    ----                                   ----------------------
    apt-get download linux-image-6.1.0-N   initramfs /init (busybox): insmod virtio, 9p, overlay
    dpkg -x into the cache dir               mount hostroot (9p, ro) + tmpfs upper = overlay
    initramfs: busybox + .ko files + /cmd    switch_root into the overlay
    qemu-system-x86_64 -accel tcg ...      stage 2 (pid 1): proc, sys, dev, cgroup2 only, tmp
    read the serial console                  run /cmd, print "CAPSA-GUEST-EXIT <code>", power off

Command line:  python tests/guest/vm.py [--cwd DIR] [--timeout S] [--systemd] -- COMMAND [ARGS...]
"""

from __future__ import annotations

import gzip
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

CACHE = os.environ.get("CAPSA_GUEST_CACHE", "/var/cache/capsa-guest")
QEMU = "qemu-system-x86_64"
EXIT_MARKER = "CAPSA-GUEST-EXIT"
# What the initramfs loads to reach the host's files (Debian builds them as modules); their own
# dependencies are read from each module's .modinfo and loaded first.
# The socket diagnostics and tun are what `criu check` looks for (the checkpoint tests).
MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay", "unix_diag", "inet_diag", "tcp_diag", "udp_diag",
           "raw_diag", "netlink_diag", "af_packet_diag", "tun", "veth",
           "crc32c_generic", "nf_tables",  # libcrc32c asks the crypto API for crc32c: load it first
           # criu dumps a network namespace's conntrack entries over nfnetlink; without this module
           # (nothing autoloads it: the guest has no /lib/modules) the request fails with EINVAL
           # and so does the dump of any container with a network namespace (test_checkpoint.py).
           "nf_conntrack_netlink",
           "brd")  # /dev/ram0: a block device for io.max and the device filter tests
# apparmor=1: Debian's 6.1 already starts AppArmor (CONFIG_LSM lists it, DEFAULT_SECURITY_APPARMOR);
# said explicitly because the LSM tests (test_lsm.py) run here for the AppArmor this host lacks.
KERNEL_CMDLINE = "console=ttyS0 panic=-1 quiet apparmor=1"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1bc")  # the firmware clears the screen


class GuestUnavailable(Exception):
    """QEMU or the guest kernel cannot be had on this machine (tests skip with this reason)."""


class GuestResult:
    def __init__(self, exit_code: int | None, output: str, seconds: float, boot_seconds: float | None):
        self.exit_code = exit_code  # None: the guest never reported one (crash, timeout)
        self.output = output  # the command's output, as the serial console carried it
        self.seconds = seconds
        self.boot_seconds = boot_seconds  # qemu start -> the command starts


# -- the kernel ------------------------------------------------------------------------------------
def kernel_package() -> str:
    """The current Debian 12 kernel package (linux-image-6.1.0-N-amd64), as linux-image-amd64 names it."""
    try:
        out = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise GuestUnavailable(f"apt-cache cannot name the Debian kernel package: {err}") from None
    found = re.findall(r"Depends: (linux-image-6\.1\.0-\d+-amd64)\b", out)
    if not found:
        raise GuestUnavailable(f"linux-image-amd64 depends on no linux-image-6.1.0-*-amd64: {out!r}")
    return found[0]


def kernel_dir() -> str:
    """The unpacked kernel package in the cache (downloaded and unpacked on first use)."""
    package = kernel_package()
    target = os.path.join(CACHE, package)
    if os.path.isdir(os.path.join(target, "boot")):
        return target
    os.makedirs(CACHE, exist_ok=True)
    download = tempfile.mkdtemp(dir=CACHE, prefix=".download.")
    try:
        result = subprocess.run(["apt-get", "download", package], cwd=download, capture_output=True, text=True)
        debs = [f for f in os.listdir(download) if f.endswith(".deb")]
        if result.returncode != 0 or not debs:
            raise GuestUnavailable(f"apt-get download {package} failed: {result.stderr.strip()}")
        unpacked = os.path.join(download, "root")
        subprocess.run(["dpkg", "-x", os.path.join(download, debs[0]), unpacked], check=True)
        try:
            os.rename(unpacked, target)  # atomic: a half-unpacked kernel is never taken for a whole one
        except OSError:
            if not os.path.isdir(os.path.join(target, "boot")):  # else another run unpacked it first
                raise
    finally:
        shutil.rmtree(download, ignore_errors=True)
    return target


def _kernel_files(kdir: str) -> tuple[str, str]:
    boot = os.path.join(kdir, "boot")
    vmlinuz = next(f for f in os.listdir(boot) if f.startswith("vmlinuz-"))
    release = vmlinuz[len("vmlinuz-"):]
    return os.path.join(boot, vmlinuz), os.path.join(kdir, "lib", "modules", release)


def _module_index(modules_dir: str) -> dict[str, str]:
    index = {}
    for directory, _, files in os.walk(modules_dir):
        for name in files:
            if name.endswith(".ko"):
                index[name[:-3].replace("-", "_")] = os.path.join(directory, name)
    return index


def _depends(path: str) -> list[str]:
    with open(path, "rb") as f:
        data = f.read()
    match = re.search(rb"\x00depends=([^\x00]*)\x00", data)
    return [d.replace("-", "_") for d in match.group(1).decode().split(",") if d] if match else []


def module_load_order(modules_dir: str, wanted: tuple[str, ...] = MODULES) -> list[str]:
    """Paths of the wanted modules and what they depend on, dependencies first."""
    index = _module_index(modules_dir)
    order: list[str] = []

    def visit(name: str) -> None:
        if name not in index:
            raise GuestUnavailable(f"module {name} is not in {modules_dir}")
        if index[name] in order:
            return
        for dependency in _depends(index[name]):
            visit(dependency)
        order.append(index[name])

    for name in wanted:
        visit(name)
    return order


# -- the initramfs ---------------------------------------------------------------------------------
# Stage 1, pid 1 in the initramfs: reach the host's files and switch to them.
STAGE1 = r"""#!/bin/busybox sh
export PATH=/bin
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /host /rw /newroot
mount -t proc proc /proc
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules); do insmod "$m" || echo "capsa-guest: insmod $m failed"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /host || exec poweroff -f
mount -t tmpfs -o mode=0755 tmpfs /rw
mkdir /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot || exec poweroff -f
cp /stage2 /cmd /newroot/
umount /proc
umount /dev
if [ -e /capsa-guest.service ]; then
  cp /capsa-guest.service /newroot/etc/systemd/system/
  exec switch_root /newroot /lib/systemd/systemd --unit=capsa-guest.service
fi
exec switch_root /newroot /bin/busybox sh /stage2
"""

# Stage 2, pid 1 in the host's files (overlaid): the mounts a command expects, cgroup2 only.
# (Under systemd, stage 2 is a service, and systemd has made the first mounts itself.)
STAGE2 = r"""bb=/bin/busybox  # util-linux mount fails before /proc is there
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root CAPSA_IN_GUEST=1
if [ $$ = 1 ]; then
  $bb mount -t proc proc /proc
  $bb mount -t sysfs sysfs /sys
  $bb mount -t devtmpfs devtmpfs /dev
  $bb mkdir -p /dev/pts /dev/shm
  $bb mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
  $bb mount -t tmpfs tmpfs /dev/shm
  $bb mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
  $bb mount -t tmpfs tmpfs /run
fi
for d in /tmp /var/tmp; do $bb mount -t tmpfs tmpfs $d; done
chmod 1777 /tmp /var/tmp
$bb hostname capsa-guest
# securityfs: where AppArmor shows itself (capsa and apparmor_parser look for
# /sys/kernel/security/apparmor); systemd mounts it on its own, a shell pid 1 does not.
grep -q " /sys/kernel/security " /proc/mounts || $bb mount -t securityfs securityfs /sys/kernel/security
$bb ip link set lo up
echo "CAPSA-GUEST-START $(cut -d' ' -f1 /proc/uptime)"
/bin/sh /cmd </dev/null
echo "CAPSA-GUEST-EXIT $?"
sync
exec /bin/busybox poweroff -f
"""


# With init="systemd": the host's systemd is pid 1 (it mounts cgroup2 alone, as Debian 12's does)
# and runs stage 2 as this unit, with nothing else started (no default dependencies).
SYSTEMD_UNIT = """[Unit]
Description=capsa guest command
DefaultDependencies=no

[Service]
Type=oneshot
TimeoutStartSec=infinity
ExecStart=/bin/busybox sh /stage2
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
"""


def _cpio(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (name, mode, data) entries, as the kernel unpacks an initramfs."""
    out = io.BytesIO()
    for number, (name, mode, data) in enumerate(entries + [("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\x00"
        fields = [number, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        out.write(b"\x00" * (-(110 + len(encoded)) % 4))
        out.write(data)
        out.write(b"\x00" * (-len(data) % 4))
    return out.getvalue()


def build_initramfs(modules_dir: str, command: str, target: str, init: str = "sh") -> None:
    with open(shutil.which("busybox") or "/bin/busybox", "rb") as f:
        busybox = f.read()
    entries: list[tuple[str, int, bytes]] = [("bin", 0o40755, b""), ("lib", 0o40755, b""),
                                             ("bin/busybox", 0o100755, busybox)]
    loaded = []
    for path in module_load_order(modules_dir):
        name = "lib/" + os.path.basename(path)
        with open(path, "rb") as f:
            entries.append((name, 0o100644, f.read()))
        loaded.append("/" + name)
    entries += [("modules", 0o100644, "\n".join(loaded).encode()), ("init", 0o100755, STAGE1.encode()),
                ("stage2", 0o100644, STAGE2.encode()), ("cmd", 0o100644, command.encode())]
    if init == "systemd":
        entries.append(("capsa-guest.service", 0o100644, SYSTEMD_UNIT.encode()))
    with open(target, "wb") as f:
        f.write(gzip.compress(_cpio(entries), compresslevel=1))


# -- running -------------------------------------------------------------------------------------
def accelerator() -> str:
    """tcg (software emulation, what CI can count on); CAPSA_GUEST_ACCEL=kvm where /dev/kvm works."""
    return os.environ.get("CAPSA_GUEST_ACCEL", "tcg")


def qemu_command(vmlinuz: str, initrd: str) -> list[str]:
    return [
        QEMU, "-accel", accelerator(), "-cpu", "host" if accelerator() == "kvm" else "max", "-m", "2G", "-smp", "2",
        "-nographic", "-no-reboot", "-nic", "none",
        "-kernel", vmlinuz, "-initrd", initrd, "-append", KERNEL_CMDLINE,
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
    ]


def run(command: str, timeout: float = 900, echo: bool = False, init: str = "sh") -> GuestResult:
    """Boot the guest, run the shell `command` in it, return its exit code and output.

    init="systemd" boots the host's systemd as pid 1 and runs the command as a service (for the
    systemd cgroup driver); the default is a shell as pid 1, which boots faster.
    """
    if shutil.which(QEMU) is None:
        raise GuestUnavailable(f"{QEMU} is not installed (apt-get install qemu-system-x86)")
    if init == "systemd" and not os.path.exists("/lib/systemd/systemd"):
        raise GuestUnavailable("systemd is not installed on this host")
    vmlinuz, modules_dir = _kernel_files(kernel_dir())
    with tempfile.TemporaryDirectory(prefix="capsa-guest.") as work:
        initrd = os.path.join(work, "initrd.gz")
        build_initramfs(modules_dir, command, initrd, init)
        started = time.monotonic()
        lines, boot_seconds, exit_code = [], None, None
        proc = subprocess.Popen(qemu_command(vmlinuz, initrd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        try:
            deadline = started + timeout
            for raw in _lines_until(proc, deadline):
                line = ANSI.sub("", raw.decode(errors="replace")).replace("\r", "")
                if "CAPSA-GUEST-START" in line:
                    boot_seconds = time.monotonic() - started
                    continue
                match = re.match(rf"{EXIT_MARKER} (\d+)$", line.strip())
                if match:
                    exit_code = int(match.group(1))
                    continue
                lines.append(line)
                if echo:
                    sys.stdout.write(line)
                    sys.stdout.flush()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    return GuestResult(exit_code, "".join(lines), time.monotonic() - started, boot_seconds)


def _lines_until(proc: subprocess.Popen, deadline: float):
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    buffer = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            yield b"capsa-guest: timed out, guest killed\n"
            return
        if not selector.select(remaining):
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            if buffer:
                yield buffer
            return
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            yield line + b"\n"


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cwd", default=os.getcwd(), help="directory the command runs in (default: here)")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--systemd", action="store_true", help="boot systemd as pid 1; the command runs as a service")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    script = f"cd {shlex.quote(args.cwd)} && {shlex.join(args.command)}"
    try:
        result = run(script, timeout=args.timeout, echo=True, init="systemd" if args.systemd else "sh")
    except GuestUnavailable as err:
        print(f"capsa-guest: {err}", file=sys.stderr)
        return 2
    boot = f"{result.boot_seconds:.1f} s" if result.boot_seconds is not None else "never"
    print(f"capsa-guest: boot {boot}, total {result.seconds:.1f} s, exit {result.exit_code}", file=sys.stderr)
    return 1 if result.exit_code is None else result.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
