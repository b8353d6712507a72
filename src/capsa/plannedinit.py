"""The planned init: a new container's init set up by a list of system calls that its parent
computed, carried out by a few hundred bytes of machine code (plannedinit.s) instead of Python.

Why: a container's init written in Python (capsa.init) runs in a fork of its parent's interpreter:
every page of the interpreter it touches is copied for it (~570 page faults a run) and its
set-up is ~45% interpreter. Everything that set-up decides, the parent can decide before the
fork: the mounts, their paths and flags, the capabilities, the environment, the program's
candidate paths. What is left for the child is system calls with arguments known in advance, and
checks of what the kernel answers (a procfs that is one, a file or a directory to mask). The
child execs this program from a sealed memfd (as the exec trampoline: /proc/self/exe is never a
host binary, CVE-2019-5736) right after it is cloned, and the program carries the plan out.

Only what the Python init would do the same way is planned (plan() says None otherwise, and the
Python init does the rest): a container whose init execs at once (capsa.api's runs), born in all
its new namespaces with a new user namespace whose maps root writes, no terminal, hooks, sysctl,
LSM labels, idmapped or cgroup mounts, scheduling or memory policy, and mount destinations that
exist. Every path inside the rootfs is still resolved by the kernel with openat2(RESOLVE_IN_ROOT)
at the time of the mount, and used through /proc/self/fd/N, as capsa.rootfs does; the parent's
own look at the rootfs only decides whether the plan can be made.

    the child's fds: 0-2 the process's stdio, 3 the plan (a memfd), 4 the channel to the parent
    (a stream socket). The cgroup files the child joins by writing "0" (v1 `tasks`: see
    Cgroup.self_join_files) come on the channel after "m": one byte with the fds (SCM_RIGHTS),
    which the kernel puts at the lowest free numbers, 3 (the plan's, closed) and 5 on. The
    parent makes the cgroup after the clone (capsa.launch), while the child makes its
    namespaces and execs this program: the files cannot be among the fds it is cloned with.
    the plan: u32 the number of steps, 12 bytes of padding, the steps (STEP bytes each: u32 kind,
    u32 flags, u64 system call number, six u64 arguments, i64 want, u32 skip, u32 errno), then
    their data (strings, structures, buffers) at the addresses the steps name (PLAN_ADDRESS on).
    a CALL step makes the system call; a failure ends the init unless the step is SOFT for that
    errno (its next `skip` steps are skipped) or TRY (an exec candidate: the first errno that is
    not ENOENT is kept, for the FAIL step after the last one). EXACT: the result must be `want`
    (the fd number the plan gave an open). A TEST step compares (*(u64 *)a0 & a1) with a2: not
    equal, it ends the init, or skips if SOFT. SKIP skips `skip` steps.
    the child waits for one byte on fd 4 ("go": the parent has written its maps and limits). A
    failure is written on fd 4: u32 the step's index, u32 the errno (UNEXPECTED: not the result
    planned); the init exits 1. Its successful exec closes fd 4 (close-on-exec): EOF.
"""

from __future__ import annotations

import _struct as struct
import posix

from capsa import tinyelf

PLAN_ADDRESS, PLAN_MAX = 0x600000, 0x100000
_BSS = (PLAN_ADDRESS, 0x101000)  # the plan, then the failure report
STEP = 80
CALL, TEST, FAIL, SKIP = 0, 1, 2, 3
EXACT, TRY, SOFT, ANY = 1, 2, 4, 8
UNEXPECTED = 0x10000
PLAN_FD, CHANNEL_FD = 3, 4
_CODE = bytes.fromhex(
    "48833c2401"                  # 000  cmp qword [rsp],0x1
    "0f8555010000"                # 005  jne 160
    "bf03000000"                  # 00b  mov edi,0x3
    "be00006000"                  # 010  mov esi,0x600000
    "ba00001000"                  # 015  mov edx,0x100000
    "4531d2"                      # 01a  xor r10d,r10d
    "b811000000"                  # 01d  mov eax,0x11
    "0f05"                        # 022  syscall
    "4883f810"                    # 024  cmp rax,0x10
    "0f8c2b010000"                # 028  jl 159
    "bf03000000"                  # 02e  mov edi,0x3
    "b803000000"                  # 033  mov eax,0x3
    "0f05"                        # 038  syscall
    "448b2c2500006000"            # 03a  mov r13d,dword 0x600000
    "41bc10006000"                # 042  mov r12d,0x600010
    "4531f6"                      # 048  xor r14d,r14d
    "41bf02000000"                # 04b  mov r15d,0x2
    # next:
    "4539ee"                      # 051  cmp r14d,r13d
    "0f83d7000000"                # 054  jae 131
    "418b0424"                    # 05a  mov eax,dword [r12]
    "83f801"                      # 05e  cmp eax,0x1
    "0f848b000000"                # 061  je f2
    "83f802"                      # 067  cmp eax,0x2
    "0f84c1000000"                # 06a  je 131
    "83f803"                      # 070  cmp eax,0x3
    "0f849f000000"                # 073  je 118
    "498b442408"                  # 079  mov rax,qword [r12+0x8]
    "498b7c2410"                  # 07e  mov rdi,qword [r12+0x10]
    "498b742418"                  # 083  mov rsi,qword [r12+0x18]
    "498b542420"                  # 088  mov rdx,qword [r12+0x20]
    "4d8b542428"                  # 08d  mov r10,qword [r12+0x28]
    "4d8b442430"                  # 092  mov r8,qword [r12+0x30]
    "4d8b4c2438"                  # 097  mov r9,qword [r12+0x38]
    "0f05"                        # 09c  syscall
    "418b4c2404"                  # 09e  mov ecx,dword [r12+0x4]
    "483d01f0ffff"                # 0a3  cmp rax,0xfffffffffffff001
    "7316"                        # 0a9  jae c1
    "f7c101000000"                # 0ab  test ecx,0x1
    "746c"                        # 0b1  je 11f
    "493b442440"                  # 0b3  cmp rax,qword [r12+0x40]
    "7465"                        # 0b8  je 11f
    "b800000100"                  # 0ba  mov eax,0x10000
    "eb73"                        # 0bf  jmp 134
    # failed:
    "f7d8"                        # 0c1  neg eax
    "f7c104000000"                # 0c3  test ecx,0x4
    "740f"                        # 0c9  je da
    "f7c108000000"                # 0cb  test ecx,0x8
    "7545"                        # 0d1  jne 118
    "413b44244c"                  # 0d3  cmp eax,dword [r12+0x4c]
    "743e"                        # 0d8  je 118
    # not_soft:
    "f7c102000000"                # 0da  test ecx,0x2
    "7452"                        # 0e0  je 134
    "83f802"                      # 0e2  cmp eax,0x2
    "7438"                        # 0e5  je 11f
    "4183ff02"                    # 0e7  cmp r15d,0x2
    "7532"                        # 0eb  jne 11f
    "4189c7"                      # 0ed  mov r15d,eax
    "eb2d"                        # 0f0  jmp 11f
    # test:
    "498b7c2410"                  # 0f2  mov rdi,qword [r12+0x10]
    "488b07"                      # 0f7  mov rax,qword [rdi]
    "4923442418"                  # 0fa  and rax,qword [r12+0x18]
    "493b442420"                  # 0ff  cmp rax,qword [r12+0x20]
    "7419"                        # 104  je 11f
    "41f744240404000000"          # 106  test dword [r12+0x4],0x4
    "7507"                        # 10f  jne 118
    "b816000000"                  # 111  mov eax,0x16
    "eb1c"                        # 116  jmp 134
    # skip:
    "418b5c2448"                  # 118  mov ebx,dword [r12+0x48]
    "eb02"                        # 11d  jmp 121
    # advance:
    "31db"                        # 11f  xor ebx,ebx
    # forward:
    "ffc3"                        # 121  inc ebx
    "4101de"                      # 123  add r14d,ebx
    "6bdb50"                      # 126  imul ebx,ebx,0x50
    "4901dc"                      # 129  add r12,rbx
    "e920ffffff"                  # 12c  jmp 51
    # fail_saved:
    "4489f8"                      # 131  mov eax,r15d
    # fail:
    "4489342500007000"            # 134  mov dword 0x700000,r14d
    "89042504007000"              # 13c  mov dword 0x700004,eax
    "bf04000000"                  # 143  mov edi,0x4
    "be00007000"                  # 148  mov esi,0x700000
    "ba08000000"                  # 14d  mov edx,0x8
    "b801000000"                  # 152  mov eax,0x1
    "0f05"                        # 157  syscall
    # bad:
    "bf01000000"                  # 159  mov edi,0x1
    "eb05"                        # 15e  jmp 165
    # refuse:
    "bf7e000000"                  # 160  mov edi,0x7e
    # leave:
    "b8e7000000"                  # 165  mov eax,0xe7
    "0f05"                        # 16a  syscall
)


def elf_image() -> bytes:
    return tinyelf.image(_CODE, bss=_BSS)


_shared = tinyelf.SharedImage("capsa-init", elf_image)


def shared_fd() -> int:
    """This process's sealed copy of the program, made once (tinyelf.SharedImage)."""
    return _shared.fd()


supported = tinyelf.supported


def enabled() -> bool:
    """Supported here, and not turned off: CAPSA_PLANNED_INIT=0 in the environment has every
    init set up in Python (capsa.init), to compare the two or rule the plan out."""
    return supported() and posix.environ.get(b"CAPSA_PLANNED_INIT") != b"0"


def _fsencode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


# -- the plan -----------------------------------------------------------------------------------
# x86-64 system call numbers of the steps (arch/x86/entry/syscalls/syscall_64.tbl): the program
# is x86-64 machine code, and so are its plans.
_NR = {
    "read": 0, "write": 1, "close": 3, "fstat": 5, "rt_sigaction": 13, "rt_sigprocmask": 14, "ioctl": 16,
    "socket": 41, "execve": 59, "chdir": 80, "fchdir": 81, "umask": 95, "getcwd": 79, "setgroups": 116,
    "setresuid": 117, "setresgid": 119, "setsid": 112, "capset": 126, "fstatfs": 138, "prctl": 157,
    "pivot_root": 155, "mount": 165, "umount2": 166, "sethostname": 170, "setdomainname": 171, "openat": 257,
    "unshare": 272, "prlimit64": 302, "recvmsg": 47, "seccomp": 317, "keyctl": 250, "close_range": 436, "openat2": 437,
    "mount_setattr": 442, "newfstatat": 262, "faccessat": 269, "exit_group": 231, "dup3": 292, "execveat": 322,
}


class _Ref:
    """An address in the plan's data, known once the number of steps is."""

    __slots__ = ("offset",)

    def __init__(self, offset: int):
        self.offset = offset


class Builder:
    """Steps and their data; the fd numbers the kernel will give the plan's opens (the lowest
    free one, the plan being the only thing that opens and closes in the child)."""

    def __init__(self, open_fds: set[int]):
        self.steps: list[tuple] = []
        self.why: list[str] = []
        self.data = bytearray()
        self.open_fds = set(open_fds)
        self.pointers: list[tuple[int, _Ref]] = []  # (where in the data, to what)

    def blob(self, data: bytes) -> _Ref:
        ref = _Ref(len(self.data))
        self.data += data + b"\0" * (-len(data) % 8)
        return ref

    def string(self, text: str | bytes) -> _Ref:
        return self.blob((text if isinstance(text, bytes) else _fsencode(text)) + b"\0")

    def point(self, where: _Ref, offset: int, target: _Ref) -> None:
        """Have the data at where+offset hold target's address (a u64)."""
        self.pointers.append((where.offset + offset, target))

    def fd_path(self, fd: int) -> _Ref:
        return self.string(f"/proc/self/fd/{fd}")

    def call(self, name: str, *args, why: str, want: int | None = None, flags: int = 0, soft: int = 0) -> int:
        """A system call step; its index (soft: the errno that skips, see skip_to)."""
        self.steps.append((CALL, flags | (EXACT if want is not None else 0) | (SOFT if soft else 0), _NR[name],
                           args, want or 0, 0, soft))
        self.why.append(why)
        return len(self.steps) - 1

    def open(self, name: str, *args, why: str, soft: int = 0) -> int:
        """An open-like call (openat, openat2, socket): the fd it must return."""
        fd = self._lowest_free_fd()
        self.call(name, *args, why=why, want=fd, soft=soft)
        self.open_fds.add(fd)
        return fd

    def _lowest_free_fd(self) -> int:
        return min(set(range(len(self.open_fds) + 1)) - self.open_fds)

    def close(self, fd: int) -> None:
        self.call("close", fd, why="close")
        self.open_fds.discard(fd)

    def receive_fds(self, channel: int, count: int, why: str) -> list[int]:
        """One byte on the stream socket `channel` with `count` fds (SCM_RIGHTS): the numbers
        the kernel gives them, the lowest free ones in the order they were sent."""
        space = 16 + (4 * count + 7) // 8 * 8  # CMSG_SPACE
        byte, control = self.blob(bytes(8)), self.blob(bytes(space))
        iov = self.blob(struct.pack("<QQ", 0, 1))
        self.point(iov, 0, byte)
        header = self.blob(struct.pack("<QI4xQQQQi4x", 0, 0, 0, 1, 0, space, 0))  # struct msghdr
        self.point(header, 16, iov)
        self.point(header, 32, control)
        self.call("recvmsg", channel, header, _MSG_CMSG_CLOEXEC, why=why, want=1)
        self.test(control, 0xFFFFFFFFFFFFFFFF, 16 + 4 * count, why=f"{why}: not the {count} planned")  # cmsg_len
        self.test(_Ref(control.offset + 8), 0xFFFFFFFFFFFFFFFF, _SOL_SOCKET | _SCM_RIGHTS << 32, why=why)
        fds = []
        for _ in range(count):
            fds.append(self._lowest_free_fd())
            self.open_fds.add(fds[-1])
        return fds

    def test(self, address: _Ref, mask: int, value: int, why: str, soft: bool = False) -> int:
        self.steps.append((TEST, SOFT if soft else 0, 0, (address, mask, value), 0, 0, 0))
        self.why.append(why)
        return len(self.steps) - 1

    def skip(self, count: int = 0) -> int:
        self.steps.append((SKIP, 0, 0, (), 0, count, 0))
        self.why.append("skip")
        return len(self.steps) - 1

    def skip_to_here(self, step: int) -> None:
        """Make `step` (SOFT, or a SKIP) skip every step after it so far."""
        kind, flags, number, args, want, _, errno = self.steps[step]
        self.steps[step] = (kind, flags, number, args, want, len(self.steps) - step - 1, errno)

    def fail(self, why: str) -> None:
        self.steps.append((FAIL, 0, 0, (), 0, 0, 0))
        self.why.append(why)

    def encode(self) -> bytes:
        base = PLAN_ADDRESS + 16 + STEP * len(self.steps)
        out = [struct.pack("<I12x", len(self.steps))]
        for kind, flags, number, args, want, skip, errno in self.steps:
            values = [(base + a.offset if isinstance(a, _Ref) else a) & 0xFFFFFFFFFFFFFFFF for a in args]
            values += [0] * (6 - len(values))
            out.append(struct.pack("<IIQ6QqII", kind, flags, number, *values, want, skip, errno))
        data = bytearray(self.data)
        for at, target in self.pointers:
            data[at:at + 8] = struct.pack("<Q", base + target.offset)
        encoded = b"".join(out) + bytes(data)
        if len(encoded) > PLAN_MAX:
            raise ValueError("the plan is too large")
        return encoded


# -- what the Python init does, planned -----------------------------------------------------------
_O_PATH, _O_DIRECTORY, _O_RDONLY, _O_CLOEXEC = posix.O_PATH, posix.O_DIRECTORY, posix.O_RDONLY, posix.O_CLOEXEC
_ENOENT, _EPERM, _ENOSYS = 2, 1, 38
_AT_FDCWD = -100
_S_IFMT, _S_IFDIR = 0o170000, 0o040000
_MOUNT_ATTR = {1: 0x1, 2: 0x2, 4: 0x4, 8: 0x8}  # MS_RDONLY, NOSUID, NODEV, NOEXEC -> MOUNT_ATTR_*
_NEW_FILESYSTEMS = ("proc", "tmpfs", "sysfs", "devpts", "mqueue")
_CAPABILITY_VERSION_3 = 0x20080522
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP, _IFF_LOOPBACK = 0x8913, 0x8914, 0x1, 0x8
_SOL_SOCKET, _SCM_RIGHTS, _MSG_CMSG_CLOEXEC = 1, 1, 0x40000000


# The calls capsa.rootfs makes through capsa.linux (whose OSError names the call) where the plan
# makes these; mount_setattr's flags are a remount (mount) there.
_LINUX_CALL = {_NR["openat2"]: "openat2", _NR["mount"]: "mount", _NR["mount_setattr"]: "mount"}


def _is_rootfs_message(why: str) -> bool:
    """capsa.rootfs's messages of mounts, masked and read-only paths."""
    return why.startswith(("mounts[", "cannot mask ")) or (why.startswith("cannot make /") and why.endswith(" read-only"))


class Planned:
    """A plan made: its bytes, what each step does (for the parent's error message), where the
    container's id goes in it."""

    __slots__ = ("plan", "why", "executable", "id_offset", "recheck")

    def __init__(self, plan: bytes, why: list[str], executable: str, id_offset: int, recheck: list | None = None):
        self.plan = plan
        self.why = why
        self.executable = executable
        self.id_offset = id_offset
        self.recheck = recheck  # a remembered plan's facts, to check again before "go" (plan_for)

    def for_container(self, container_id: str, recheck: list | None = None) -> Planned | None:
        """This plan with another container's id (its session keyring's name)."""
        name = _fsencode(container_id)
        if len(name) >= ID_MAX:
            return None
        plan = bytearray(self.plan)
        plan[self.id_offset:self.id_offset + ID_MAX] = name.ljust(ID_MAX, b"\0")
        return Planned(bytes(plan), self.why, self.executable, self.id_offset, recheck)

    def error(self, step: int, errno: int) -> str:
        """The message of a failure the child reported."""
        why = self.why[step] if 0 <= step < len(self.why) else f"step {step}"
        if why == "exec-access:":
            return f'exec: "{self.executable}": permission denied'
        if why.startswith("exec:"):
            return _exec_error(self.executable, errno)
        if errno == UNEXPECTED:
            return f"{why}: the kernel's answer was not the one planned"
        kind, number = self._step(step)
        if kind == TEST:
            return why  # a check that failed says it all (capsa.rootfs's messages have no errno)
        if not errno:
            return why
        # capsa.rootfs's mount messages end with the OSError of a capsa.linux call: "mount: ..."
        call = _LINUX_CALL.get(number) if kind == CALL and _is_rootfs_message(why) else None
        return f"{why}: {call}: {posix.strerror(errno)}" if call else f"{why}: {posix.strerror(errno)}"

    def _step(self, step: int) -> tuple[int | None, int | None]:
        """The kind and system call number of `step` (None, None: not in the plan)."""
        at = 16 + STEP * step
        if step < 0 or at + STEP > len(self.plan):
            return None, None
        kind, _, number = struct.unpack_from("<IIQ", self.plan, at)
        return kind, number


def _exec_error(name: str, errno: int) -> str:
    """capsa.init.find_executable's messages."""
    if errno == 13:
        return f'exec: "{name}": permission denied'
    if errno == _ENOENT:
        if "/" in name:
            return f'exec: "{name}": stat {name}: no such file or directory'
        return f'exec: "{name}": executable file not found in $PATH'
    return f'exec: "{name}": {posix.strerror(errno)}'


def eligible(plan) -> bool:
    """Whether the Python init would set this container up only with what a plan can do (see
    the module's doc). The mounts are looked at by build()."""
    config = plan.init
    if config is None or not config.exec_at_once or config.serve is not None or config.no_pivot:
        return False
    if plan.console is not None or plan.inherited_fds or plan.listen_fds is not None or plan.memory_policy:
        return False
    spec, process = config.spec, plan.process
    linux_spec = spec.get("linux") or {}
    if process.get("terminal") or process.get("apparmorProfile") or process.get("selinuxLabel"):
        return False
    if process.get("scheduler") or process.get("ioPriority") or spec.get("hooks"):
        return False
    if linux_spec.get("mountLabel") or linux_spec.get("sysctl") or linux_spec.get("rootfsPropagation"):
        return False
    if linux_spec.get("personality") or linux_spec.get("intelRdt"):
        return False
    kinds = [ns.type for ns in plan.namespaces]
    if any(ns.joined for ns in plan.namespaces) or "time" in kinds or "mount" not in kinds or "user" not in kinds:
        return False
    return posix.geteuid() == 0  # root writes the maps unasked (rootless: newuidmap, asked for)


_cache: dict[bytes, tuple[Planned | None, list]] = {}  # key -> (the plan or None, the facts it rests on)
_CACHED_MAX = 16
ID_MAX = 256


def plan_for(plan, seccomp_filter, joins: list[str], fresh: bool = False) -> Planned | None:
    """build(), remembered by what it depends on: the spec, the rootfs, the number of cgroup
    files to join (a long-lived caller, the API's zygote, runs the same spec over and over;
    building one costs ~1 ms of Python), and what it saw of the rootfs (`facts`, ~10 stats).

    A remembered plan comes with those facts as its `recheck`: its caller checks them again
    (still_true) before the plan's child may go on, and asks again with `fresh` if they no longer
    hold (a mount destination removed since: the plan is made again). capsa.launch checks them
    while the child sets itself up, out of the way. A spec found not plannable is looked at
    again here, each time (a missing mount destination the Python init then made)."""
    import marshal

    config = plan.init
    key = marshal.dumps((config.spec, config.rootfs, config.no_new_keyring, len(joins)))
    cached = None if fresh else _cache.get(key)
    if cached is not None and cached[0] is None and not still_true(cached[1]):
        cached = None
    recheck = None if cached is None else cached[1]
    if cached is None:
        _cache.pop(key, None)
        if len(_cache) >= _CACHED_MAX:
            _cache.pop(next(iter(_cache)))
        view = _View(config.rootfs, config.spec.get("mounts") or [])
        cached = _cache[key] = (build(plan, seccomp_filter, joins, view), view.facts)
    made = cached[0]
    return None if made is None else made.for_container(config.container_id, recheck)


def build(plan, seccomp_filter, joins: list[str], view: _View | None = None) -> Planned | None:
    """The plan of this container's init (eligible() being true), its cgroup files `joins`
    received on the channel, in that order, after "m"; None where the Python init must do it.
    `view`: where what it sees of the rootfs is noted (a new one by default)."""
    from capsa import linux
    from capsa.mountopts import is_idmapped, parse_mount_options

    config, process = plan.init, plan.process
    spec = config.spec
    linux_spec = spec.get("linux") or {}
    mounts = spec.get("mounts") or []
    if seccomp_filter is not None and seccomp_filter.notifies:
        return None
    if any(is_idmapped(m) or m.get("type") in ("cgroup", "cgroup2") for m in mounts):
        return None
    view = view or _View(config.rootfs, mounts)
    b = Builder({0, 1, 2, CHANNEL_FD})  # the program closes the plan's fd
    new_namespaces = {ns.type for ns in plan.namespaces}

    # capsa.launch._child: the fds, the cgroup ("go" is read at the end of the set-up, below).
    # Not dumpable (its exec made it so again) before anything else: nothing may open it through /proc.
    b.call("prctl", linux.PR_SET_DUMPABLE, 0, why="prctl(PR_SET_DUMPABLE)")
    b.call("close_range", CHANNEL_FD + 1, 0xFFFFFFFF, 0, why="cannot close the fds of the runtime")
    if joins:
        fds = b.receive_fds(CHANNEL_FD, len(joins), why="cannot receive the cgroup files to join")
        for fd, path in zip(fds, joins, strict=True):
            b.call("write", fd, b.string("0"), 1, why=f"cannot join cgroup {path.rsplit('/', 1)[0]}", want=1)
            b.close(fd)

    # capsa.init._setup_and_exec
    if "cgroup" in new_namespaces:
        b.call("unshare", linux.CLONE_NEWCGROUP, why="cannot create the cgroup namespace")
    b.call("setsid", why="setsid")
    container_id = b.blob(bytes(ID_MAX))  # filled in by for_container
    if not config.no_new_keyring:
        b.call("keyctl", 1, container_id, why="cannot create a session keyring", soft=_ENOSYS)
    if "network" in new_namespaces:
        loopback_up(b)
    dev_null = open_dev_null(b)
    b.call("mount", 0, b.string("/"), 0, linux.MS_SLAVE | linux.MS_REC, 0, why="cannot make / a slave mount")
    b.call("mount", b.string(config.rootfs), b.string(config.rootfs), b.string("bind"), linux.MS_BIND | linux.MS_REC, 0,
           why=f"cannot bind the rootfs {config.rootfs}")
    root = b.open("openat", _AT_FDCWD, b.string(config.rootfs), _O_PATH | _O_DIRECTORY | _O_CLOEXEC,
                  why=f"cannot open the rootfs {config.rootfs}")
    for index, entry in enumerate(mounts):
        if not _plan_mount(b, view, root, index, entry, parse_mount_options(entry.get("options") or [])):
            return None
    from capsa.rootfs import dev_is_bind_mounted

    if not dev_is_bind_mounted(mounts):
        return None  # devices: binds of the host's nodes (a user namespace), not planned
    cwd = process["cwd"]
    found = view.stat(cwd, len(mounts))
    if found is None or found.st_mode & _S_IFMT != _S_IFDIR:
        return None  # mkdir_all would make it, or say it cannot (a file)
    proc = None
    if any(m["destination"].rstrip("/") == "/proc" for m in mounts):
        proc = open_procfs_root(b, root)
    for path in linux_spec.get("maskedPaths") or []:
        mask(b, root, proc, path, dev_null)
    for path in linux_spec.get("readonlyPaths") or []:
        read_only(b, root, proc, path)
    if proc is not None:
        b.close(proc)
    _pivot(b, config.rootfs)
    if (spec.get("root") or {}).get("readonly"):
        b.call("mount_setattr", _AT_FDCWD, b.string("/"), 0, b.blob(struct.pack("<QQQQ", 1, 0, 0, 0)), 32,
               why="cannot make the root read-only")
    b.close(dev_null)
    b.close(root)
    b.call("chdir", b.string("/"), why="chdir /")
    if spec.get("hostname"):
        b.call("sethostname", b.string(spec["hostname"]), len(_fsencode(spec["hostname"])), why="sethostname")
    if spec.get("domainname"):
        b.call("setdomainname", b.string(spec["domainname"]), len(_fsencode(spec["domainname"])),
               why="setdomainname")

    # capsa.init._prepare_process
    set_rlimits(b, process)
    _enter_cwd(b, cwd)
    env = _environment(process, view, len(mounts))
    if env is None:
        return None
    name = process["args"][0]
    # "go" (capsa.launch._drive_planned): the limits are in place, which must hold before any code
    # of the container's runs, not before its set-up (the set-up above makes no device node and
    # opens none but O_PATH, and forks nothing), and a remembered plan was found to hold still.
    go = b.blob(bytes(8))
    b.call("read", CHANNEL_FD, go, 1, want=1, why="container init exited before it was ready")
    b.call("close_range", 3, 0xFFFFFFFF, 4, why="cannot close the fds of the runtime")

    # capsa.init._become_process, then the seccomp filter and the exec
    no_new_privs = bool(process.get("noNewPrivileges"))
    if seccomp_filter is not None and not no_new_privs:
        load_seccomp(b, seccomp_filter)
    become_user(b, process)
    if no_new_privs:
        b.call("prctl", linux.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, why="prctl(PR_SET_NO_NEW_PRIVS)")
    umask = (process.get("user") or {}).get("umask")
    b.call("umask", 0o022 if umask is None else umask, why="umask")
    reset_signals(b)
    if seccomp_filter is not None and no_new_privs:
        load_seccomp(b, seccomp_filter)
    argv = pointers(b, process["args"])
    envp = pointers(b, [f"{k}={v}" for k, v in env.items()])
    _exec_first_found(b, name, env, argv, envp)
    return Planned(b.encode(), b.why, name, 16 + STEP * len(b.steps) + container_id.offset)


def _exec_first_found(b: Builder, name: str, env: dict[str, str], argv: _Ref, envp: _Ref) -> None:
    """capsa.init.find_executable, then the exec: the first candidate of PATH that is a regular
    file must be executable (else "permission denied") and is exec'd; an exec that fails then
    ends the init with 127, as the Python init's does once it has said "ready"."""
    from capsa import posixlite
    from capsa.init import DEFAULT_PATH

    if "/" in name:
        candidates = [name]
    else:
        candidates = [posixlite.join(d or ".", name) for d in env.get("PATH", DEFAULT_PATH).split(":")]
    buffer = b.blob(bytes(144))
    for candidate in candidates:
        path = b.string(candidate)
        stat = b.call("newfstatat", _AT_FDCWD, path, buffer, 0, why="exec:", flags=SOFT | ANY)
        not_a_file = b.test(_Offset(buffer, 24), _S_IFMT, 0o100000, why="exec:", soft=True)
        b.call("faccessat", _AT_FDCWD, path, 1, why="exec-access:")  # X_OK
        b.call("execve", path, argv, envp, why="exec:", flags=TRY)
        b.call("exit_group", 127, why="exec:")
        b.skip_to_here(stat)
        b.skip_to_here(not_a_file)
    b.fail("exec:")  # none found: ENOENT


def set_rlimits(b: Builder, process: dict) -> None:
    from capsa.spec import RLIMITS

    for index, rlimit in enumerate(process.get("rlimits") or []):
        soft, hard = (min(rlimit[k], 2**64 - 1) for k in ("soft", "hard"))
        b.call("prlimit64", 0, RLIMITS[rlimit["type"]], b.blob(struct.pack("<QQ", soft, hard)), 0,
               why=f"process.rlimits[{index}]: cannot set {rlimit['type']} to {rlimit['soft']}:{rlimit['hard']}")


def pointers(b: Builder, strings: list[str]) -> _Ref:
    """A NULL-terminated array of pointers to `strings` (argv, envp)."""
    refs = [b.string(s) for s in strings]
    table = b.blob(bytes(8 * (len(refs) + 1)))
    for index, ref in enumerate(refs):
        b.point(table, 8 * index, ref)
    return table


class _View:
    """Where a path of the container is on the host before the init runs, as the mounts of
    config.json will lay it out: what decides whether a mount destination exists. Every answer
    it gives is logged (`facts`): a cached plan is used again only while they all still hold."""

    def __init__(self, rootfs: str, mounts: list[dict]):
        self.rootfs = rootfs
        self.mounts = mounts
        self.facts: list[tuple[str, tuple, object]] = []

    def _noted(self, name: str, args: tuple):
        answer = _QUESTIONS[name](*args)
        self.facts.append((name, args, _summary(answer)))
        return answer

    def stat(self, path: str, upto: int):
        """The host's stat of `path` once mounts[:upto] are made (no symlink followed on the way
        below the mount's root); None where it is missing, unknown or reached through a symlink."""
        if ".." in path.split("/"):
            return None
        return self._noted("stat", self._place(path, upto))

    def read(self, path: str, upto: int) -> bytes | None:
        return self._noted("read", self._place(path, upto))

    def reachable_by_anyone(self, path: str) -> bool:
        return self._noted("reachable", (path,))

    def link_on_the_way(self, path: str, upto: int) -> bool:
        return self._noted("link", self._place(path, upto))

    def _place(self, path: str, upto: int) -> tuple[str | None, str]:
        """(host directory the path is under, the rest of it) once mounts[:upto] are made; the
        directory is None where a new filesystem (empty but for its mount point) holds it."""
        from capsa.mountopts import parse_mount_options

        parts = [p for p in path.split("/") if p and p != "."]
        for entry in reversed(self.mounts[:upto]):
            top = [p for p in entry["destination"].split("/") if p and p != "."]
            if parts[:len(top)] != top:
                continue
            rest = "/".join(parts[len(top):])
            if entry.get("type") == "bind" or parse_mount_options(entry.get("options") or []).is_bind:
                return entry["source"], rest
            return None, rest
        return self.rootfs, "/".join(parts)



def _stat_at(base: str | None, rest: str):
    if base is None:
        return _NEW_FS_ROOT if not rest else None
    fd = _open_at(base, rest, _O_PATH)
    if fd is None:
        return None
    try:
        return posix.fstat(fd)
    finally:
        posix.close(fd)


def _open_at(base: str, rest: str, flags: int) -> int | None:
    """`rest` under `base` (followed as a bind's source is), no symlink on the way; None if it
    cannot be opened so."""
    from capsa import linux

    try:
        fd = posix.open(base, (flags if not rest else _O_PATH) | _O_CLOEXEC)
    except OSError:
        return None
    if not rest:
        return fd
    try:
        return linux.openat2(fd, rest, flags, linux.RESOLVE_BENEATH | linux.RESOLVE_NO_SYMLINKS)
    except OSError:
        return None
    finally:
        posix.close(fd)


def _read_at(base: str | None, rest: str) -> bytes | None:
    found = _stat_at(base, rest)
    if found is None or found is _NEW_FS_ROOT or found.st_mode & _S_IFMT != 0o100000:
        return None
    fd = _open_at(base, rest, posix.O_RDONLY | posix.O_NONBLOCK)
    if fd is None:
        return None
    try:
        return posix.read(fd, 1 << 20)
    finally:
        posix.close(fd)


def _link_at(base: str | None, rest: str) -> bool:
    """Whether a path that looks missing is a symlink (followed inside the root by the Python init)."""
    if base is None:
        return False
    parts = rest.split("/") if rest else []
    for depth in range(1, len(parts) + 1):
        try:
            if posix.lstat(base + "/" + "/".join(parts[:depth])).st_mode & _S_IFMT == 0o120000:
                return True
        except OSError:
            return False
    return False


def still_true(facts: list[tuple[str, tuple, object]]) -> bool:
    """Whether every one of the `facts` a view noted holds now."""
    return all(_summary(_QUESTIONS[name](*args)) == summary for name, args, summary in facts)


def _summary(answer) -> object:
    """What of an answer of the view a plan depends on: a stat's file type and mode."""
    if answer is None or isinstance(answer, (bool, bytes)):
        return answer
    return answer.st_mode


class _NewFsRoot:
    """The stat of a new filesystem's root: a directory (its mode is the filesystem's)."""

    st_mode = _S_IFDIR | 0o755


_NEW_FS_ROOT = _NewFsRoot()


def loopback_up(b: Builder) -> None:
    """capsa.linux.loopback_up: a new network namespace's lo, whose flags are IFF_LOOPBACK alone."""
    why = "cannot bring the loopback interface up"
    sock = b.open("socket", 2, 2 | _O_CLOEXEC, 0, why=why)  # AF_INET, SOCK_DGRAM
    request = b.blob(struct.pack("16sH22x", b"lo", 0))
    b.call("ioctl", sock, _SIOCGIFFLAGS, request, why=why)
    b.test(_Offset(request, 16), 0xFFFF, _IFF_LOOPBACK, why=f"{why} (its flags are not a new one's)")
    b.call("ioctl", sock, _SIOCSIFFLAGS, b.blob(struct.pack("16sH22x", b"lo", _IFF_LOOPBACK | _IFF_UP)), why=why)
    b.close(sock)


class _Offset(_Ref):
    """An address inside a blob."""

    def __init__(self, ref: _Ref, offset: int):
        super().__init__(ref.offset + offset)


def _plan_mount(b: Builder, view: _View, root: int, index: int, entry: dict, options) -> bool:
    """capsa.rootfs._mount_one for one entry of config.json's mounts; False if not plannable."""
    from capsa import linux

    fstype = entry.get("type") or ""
    source = entry.get("source") or fstype or "none"
    destination = entry["destination"]
    why = f"mounts[{index}]: cannot mount {source} on {destination}"
    if options.propagation or options.recursive_set or options.recursive_clear or options.extensions:
        return False
    target = view.stat(destination, index)
    if target is None:
        return False  # rootfs.Rootfs.mount_point / mkdir_all would make it
    in_root = b.blob(struct.pack("<QQQ", _O_PATH | _O_CLOEXEC, 0, linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS))
    if options.is_bind or fstype == "bind":
        if not view.reachable_by_anyone(source):
            return False  # the init, mapped root, could not open it: the runtime opens it (Python init)
        extra = options.flags & ~(linux.MS_BIND | linux.MS_REC | linux.MS_REMOUNT)
        if extra & ~0xF:
            return False  # atime flags and the like: a remount the plan does not make
        held = b.open("openat", _AT_FDCWD, b.string(source), _O_PATH | _O_CLOEXEC, why=why)
        on = b.open("openat2", root, b.string(destination), in_root, 24, why=why)
        b.call("mount", b.fd_path(held), b.fd_path(on), 0, linux.MS_BIND | (linux.MS_REC if options.recursive_bind else 0), 0,
               why=why)
        b.close(on)
        b.close(held)
        if extra:
            # In a user namespace every flag the source has is locked: mount_setattr adds these
            # to them, as capsa.rootfs's remount with the source's flags does.
            attr = sum(bit for flag, bit in _MOUNT_ATTR.items() if extra & flag)
            on = b.open("openat2", root, b.string(destination), in_root, 24, why=why)
            b.call("mount_setattr", on, b.string(""), linux.AT_EMPTY_PATH, b.blob(struct.pack("<QQQQ", attr, 0, 0, 0)), 32,
                   why=why)
            b.close(on)
        return True
    if fstype not in _NEW_FILESYSTEMS:
        return False
    data = options.data
    if fstype == "tmpfs":
        mode = f"mode={target.st_mode & 0o7777:04o}"
        data = f"{mode},{data}" if data else mode
    on = b.open("openat2", root, b.string(destination), in_root, 24, why=why)
    b.call("mount", b.string(source), b.fd_path(on), b.string(fstype), options.flags & ~linux.MS_REMOUNT,
           b.string(data) if data else 0, why=why)
    b.close(on)
    return True


def _reachable_by_anyone(path: str) -> bool:
    """Every directory above `path` may be searched by others (the init is root of its user
    namespace: the host's other)."""
    parts = [p for p in path.split("/") if p]
    for depth in range(len(parts)):
        try:
            if not posix.stat("/" + "/".join(parts[:depth])).st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


def open_dev_null(b: Builder) -> int:
    """capsa.init: the host's /dev/null, opened in the container's mount namespace before any
    mount of its own (the source of the binds over masked files), and checked."""
    why = "/dev/null on the host is not the null device"
    dev_null = b.open("openat", _AT_FDCWD, b.string("/dev/null"), _O_PATH | _O_CLOEXEC, why="cannot open /dev/null")
    buffer = b.blob(bytes(144))
    b.call("fstat", dev_null, buffer, why="cannot open /dev/null")
    b.test(_Offset(buffer, 24), _S_IFMT, 0o020000, why=why)  # st_mode: S_IFCHR
    b.test(_Offset(buffer, 40), 0xFFFFFFFFFFFFFFFF, posix.makedev(1, 3), why=why)  # st_rdev
    return dev_null


def open_procfs_root(b: Builder, root: int) -> int:
    """capsa.rootfs.open_procfs_root: the container's /proc must be the root of a procfs."""
    from capsa import linux

    how = b.blob(struct.pack("<QQQ", _O_PATH | _O_DIRECTORY | _O_CLOEXEC, 0,
                             linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS))
    proc = b.open("openat2", root, b.string("/proc"), how, 24, why="mounts: cannot open /proc in the container")
    buffer = b.blob(bytes(144))
    b.call("fstatfs", proc, buffer, why="mounts: /proc in the container")
    b.test(buffer, 0xFFFFFFFFFFFFFFFF, linux.PROC_SUPER_MAGIC, why="mounts: /proc in the container is not a procfs")
    b.call("fstat", proc, buffer, why="mounts: /proc in the container")
    b.test(_Offset(buffer, 8), 0xFFFFFFFFFFFFFFFF, 1, why="mounts: /proc in the container is not the root of a procfs")
    return proc


def _open_target(b: Builder, root: int, proc: int | None, path: str, why: str) -> tuple[int, int]:
    """capsa.rootfs._open_target, skipping what follows (patched by the caller) if it is
    missing: (the fd, the open's step)."""
    from capsa import linux

    if proc is not None and (path.rstrip("/") == "/proc" or path.startswith("/proc/")):
        relative = path[len("/proc"):].strip("/") or "."
        how = b.blob(struct.pack("<QQQ", _O_PATH | _O_CLOEXEC, 0, linux.RESOLVE_BENEATH | linux.RESOLVE_NO_SYMLINKS))
        fd = b.open("openat2", proc, b.string(relative), how, 24, why=why, soft=_ENOENT)
    else:
        how = b.blob(struct.pack("<QQQ", _O_PATH | _O_CLOEXEC, 0, linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS))
        fd = b.open("openat2", root, b.string(path), how, 24, why=why, soft=_ENOENT)
    return fd, len(b.steps) - 1


def mask(b: Builder, root: int, proc: int | None, path: str, dev_null: int) -> None:
    """capsa.rootfs.mask_paths: an empty read-only tmpfs over a directory, /dev/null over the rest."""
    why = f"cannot mask {path}"
    target, opened = _open_target(b, root, proc, path, why)
    buffer = b.blob(bytes(144))
    b.call("fstat", target, buffer, why=why)
    is_file = b.test(_Offset(buffer, 24), _S_IFMT, _S_IFDIR, why=why, soft=True)
    b.call("mount", b.string("tmpfs"), b.fd_path(target), b.string("tmpfs"), 1, b.string("size=0k,mode=755"), why=why)
    over_dir = b.skip()
    b.skip_to_here(is_file)
    b.call("mount", b.fd_path(dev_null), b.fd_path(target), 0, 4096, 0, why=why)  # MS_BIND
    b.skip_to_here(over_dir)
    b.close(target)
    b.skip_to_here(opened)


def read_only(b: Builder, root: int, proc: int | None, path: str) -> None:
    """capsa.rootfs.readonly_paths: a bind of the path on itself, made read-only."""
    why = f"cannot make {path} read-only"
    target, opened = _open_target(b, root, proc, path, why)
    b.call("mount", b.fd_path(target), b.fd_path(target), 0, 4096 | 16384, 0, why=why)  # MS_BIND | MS_REC
    b.close(target)
    again, _ = _open_target(b, root, proc, path, why)
    b.call("mount_setattr", again, b.string(""), 4096, b.blob(struct.pack("<QQQQ", 1, 0, 0, 0)), 32, why=why)
    b.close(again)
    b.skip_to_here(opened)


def _pivot(b: Builder, rootfs: str) -> None:
    """capsa.rootfs.pivot_into."""
    from capsa import linux

    why = "cannot pivot into the rootfs"
    old = b.open("openat", _AT_FDCWD, b.string("/"), _O_DIRECTORY | _O_RDONLY | _O_CLOEXEC, why=why)
    new = b.open("openat", _AT_FDCWD, b.string(rootfs), _O_DIRECTORY | _O_RDONLY | _O_CLOEXEC, why=why)
    dot = b.string(".")
    b.call("fchdir", new, why=why)
    b.call("pivot_root", dot, dot, why=why)
    b.call("fchdir", old, why=why)
    b.call("mount", 0, dot, 0, linux.MS_SLAVE | linux.MS_REC, 0, why=why)
    b.call("umount2", dot, linux.MNT_DETACH, why=why)
    b.close(old)
    b.close(new)
    b.call("chdir", b.string("/"), why=why)


def _enter_cwd(b: Builder, cwd: str) -> None:
    """capsa.init.enter_cwd: resolved inside the root, and still under it (getcwd)."""
    from capsa import linux

    why = f"process.cwd {cwd!r}"
    top = b.open("openat", _AT_FDCWD, b.string("/"), _O_PATH | _O_DIRECTORY | _O_CLOEXEC, why=why)
    how = b.blob(struct.pack("<QQQ", _O_PATH | _O_DIRECTORY | _O_CLOEXEC, 0,
                             linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS))
    directory = b.open("openat2", top, b.string(cwd), how, 24, why=why)
    b.close(top)
    b.call("fchdir", directory, why=why)
    b.close(directory)
    b.call("getcwd", b.blob(bytes(4096)), 4096,
           why=f"process.cwd {cwd!r}: the working directory is outside the container's root (possible breakout): refused")


def _environment(process: dict, view: _View, upto: int) -> dict[str, str] | None:
    """capsa.init._environment, HOME from the container's /etc/passwd as _home_of reads it."""
    from capsa.init import env_of, home_in_passwd

    env = env_of(process)
    if "HOME" not in env:
        if view.stat("/etc/passwd", upto) is None and view.link_on_the_way("/etc/passwd", upto):
            return None  # followed inside the root by the Python init
        env["HOME"] = home_in_passwd(view.read("/etc/passwd", upto) or b"", (process.get("user") or {}).get("uid", 0))
    return env


def load_seccomp(b: Builder, seccomp_filter) -> None:
    program = seccomp_filter.program
    instructions = b.blob(program)
    fprog = b.blob(bytes(16))  # struct sock_fprog: u16 len, then the pointer at 8
    b.data[fprog.offset:fprog.offset + 2] = struct.pack("<H", len(program) // 8)
    b.point(fprog, 8, instructions)
    b.call("seccomp", 1, seccomp_filter.flags, fprog, why="seccomp: cannot load the filter")  # SET_MODE_FILTER


def become_user(b: Builder, process: dict) -> None:
    """capsa.caps: the bounding set, the user (keeping capabilities), the capability sets, the
    ambient ones. The init is root of a new user namespace: it holds every capability."""
    from capsa import caps, linux

    capabilities = process.get("capabilities")
    highest = caps.last_cap()
    if capabilities is not None:
        keep = caps._mask(capabilities.get("bounding"), highest)
        for number in range(highest + 1):
            if not keep & (1 << number):
                b.call("prctl", linux.PR_CAPBSET_DROP, number, 0, 0, 0, why="prctl(PR_CAPBSET_DROP)")
    user = process.get("user") or {}
    uid, gid, groups = user.get("uid", 0), user.get("gid", 0), user.get("additionalGids") or []
    b.call("prctl", linux.PR_SET_KEEPCAPS, 1, 0, 0, 0, why="prctl(PR_SET_KEEPCAPS)")
    b.call("setgroups", len(groups), b.blob(struct.pack(f"<{len(groups)}I", *groups)) if groups else 0,
           why="setgroups", soft=0 if groups else _EPERM)
    b.call("setresgid", gid, gid, gid, why=f"setresgid {gid}")
    b.call("setresuid", uid, uid, uid, why=f"setresuid {uid}")
    b.call("prctl", linux.PR_SET_KEEPCAPS, 0, 0, 0, 0, why="prctl(PR_SET_KEEPCAPS)")
    if capabilities is None:
        return
    every = (1 << (highest + 1)) - 1
    effective, permitted, inheritable = (caps._mask(capabilities.get(kind), highest) & every
                                         for kind in ("effective", "permitted", "inheritable"))
    sets = struct.pack("<IIIIII", effective & 0xFFFFFFFF, permitted & 0xFFFFFFFF, inheritable & 0xFFFFFFFF,
                       effective >> 32, permitted >> 32, inheritable >> 32)
    b.call("capset", b.blob(struct.pack("<Ii", _CAPABILITY_VERSION_3, 0)), b.blob(sets), why="capset")
    b.call("prctl", linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, why="prctl(PR_CAP_AMBIENT)")
    for name in capabilities.get("ambient") or ():
        number = caps._number(name, highest)
        if number is not None:
            b.call("prctl", linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_RAISE, number, 0, 0,
                   why="prctl(PR_CAP_AMBIENT_RAISE)", soft=_EPERM)


def reset_signals(b: Builder, every: bool = False) -> None:
    """capsa.init._reset_signals: what the child inherits from this process (the parent) not at
    its default (an ignored signal stays ignored across exec), or `every` signal (a plan made in
    another process than the child's parent), and an empty signal mask."""
    import _signal

    default = b.blob(bytes(32))  # struct kernel_sigaction: SIG_DFL, no flags, no restorer, no mask
    for number in range(1, _signal.NSIG):
        if number in (_signal.SIGKILL, _signal.SIGSTOP):
            continue
        try:
            if every or _signal.getsignal(number) is not _signal.SIG_DFL:
                b.call("rt_sigaction", number, default, 0, 8, why="rt_sigaction")
        except (OSError, ValueError):
            pass
    b.call("rt_sigprocmask", 2, b.blob(bytes(8)), 0, 8, why="rt_sigprocmask")  # SIG_SETMASK, empty


_QUESTIONS = {"stat": _stat_at, "read": _read_at, "link": _link_at, "reachable": _reachable_by_anyone}
