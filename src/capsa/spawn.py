"""Spawning a planned init (capsa.plannedinit) the way posix_spawn spawns: the child shares its
parent's memory (clone3 CLONE_VM) until it execs, running a few instructions of machine code
(spawn.s) on a stack of its own.

Why: a fork of the API's zygote copies its page tables and write-protects every page of it; the
zygote then takes a fault for each page it writes afterwards (~500 a run), and the child's exec
tears its copy down again. A planned init's child runs no Python: it only waits for its maps,
becomes root of its user namespace, puts its fds in place and execs the planned init, which a
child sharing the parent's memory can do. The parent blocks every signal around the clone (the
child starts with them blocked and never runs a handler of the parent's: the planned init
unblocks them); the job, the argv and the stack stay alive until the child has exec'd (the
launch waits for the end of the planned init, well after).

    long spawn(struct clone_args *args, size_t size, struct job *job): the child's pid or -errno
    struct job { u32 channel; u32 count; u64 executable; u64 argv; u64 envp; i32 parent_end;
                 u32 unshare; u32 sources[count]; }
The child closes first its copy of `parent_end`, the caller's end of the channel: else, holding
it, it would wait for "m" for ever if the caller died before sending it. It then makes the
namespaces `unshare` names, while its parent goes on: those the clone makes, the parent waits
for (a network namespace is ~0.4 ms of kernel work).
"""

from __future__ import annotations

import _struct as struct
import posix

_CODE = bytes.fromhex(
    "4989d0"                      # 000  mov r8,rdx
    "b8b3010000"                  # 003  mov eax,0x1b3
    "0f05"                        # 008  syscall
    "4885c0"                      # 00a  test rax,rax
    "7401"                        # 00d  je 10
    "c3"                          # 00f  ret
    # child:
    "4d89c4"                      # 010  mov r12,r8
    "418b7c2420"                  # 013  mov edi,dword [r12+0x20]
    "b803000000"                  # 018  mov eax,0x3
    "0f05"                        # 01d  syscall
    "4883ec10"                    # 01f  sub rsp,0x10
    "418b7c2424"                  # 023  mov edi,dword [r12+0x24]
    "85ff"                        # 028  test edi,edi
    "7418"                        # 02a  je 44
    "b810010000"                  # 02c  mov eax,0x110
    "0f05"                        # 031  syscall
    "4885c0"                      # 033  test rax,rax
    "740c"                        # 036  je 44
    "c70424feffffff"              # 038  mov dword [rsp],0xfffffffe
    "e992000000"                  # 03f  jmp d6
    # await_maps:
    "418b3c24"                    # 044  mov edi,dword [r12]
    "4889e6"                      # 048  mov rsi,rsp
    "ba01000000"                  # 04b  mov edx,0x1
    "31c0"                        # 050  xor eax,eax
    "0f05"                        # 052  syscall
    "4883f801"                    # 054  cmp rax,0x1
    "0f8591000000"                # 058  jne ef
    "803c246d"                    # 05e  cmp byte [rsp],0x6d
    "0f8587000000"                # 062  jne ef
    "31ff"                        # 068  xor edi,edi
    "31f6"                        # 06a  xor esi,esi
    "31d2"                        # 06c  xor edx,edx
    "b877000000"                  # 06e  mov eax,0x77
    "0f05"                        # 073  syscall
    "4885c0"                      # 075  test rax,rax
    "7555"                        # 078  jne cf
    "31ff"                        # 07a  xor edi,edi
    "31f6"                        # 07c  xor esi,esi
    "31d2"                        # 07e  xor edx,edx
    "b875000000"                  # 080  mov eax,0x75
    "0f05"                        # 085  syscall
    "4885c0"                      # 087  test rax,rax
    "7543"                        # 08a  jne cf
    "31db"                        # 08c  xor ebx,ebx
    # dup_next:
    "413b5c2404"                  # 08e  cmp ebx,dword [r12+0x4]
    "7317"                        # 093  jae ac
    "418b7c9c28"                  # 095  mov edi,dword [r12+rbx*4+0x28]
    "89de"                        # 09a  mov esi,ebx
    "b821000000"                  # 09c  mov eax,0x21
    "0f05"                        # 0a1  syscall
    "4885c0"                      # 0a3  test rax,rax
    "7827"                        # 0a6  js cf
    "ffc3"                        # 0a8  inc ebx
    "ebe2"                        # 0aa  jmp 8e
    # dup_done:
    "498b7c2408"                  # 0ac  mov rdi,qword [r12+0x8]
    "488d3543000000"              # 0b1  lea rsi,[rip+0x43]
    "498b542410"                  # 0b8  mov rdx,qword [r12+0x10]
    "4d8b542418"                  # 0bd  mov r10,qword [r12+0x18]
    "41b800100000"                # 0c2  mov r8d,0x1000
    "b842010000"                  # 0c8  mov eax,0x142
    "0f05"                        # 0cd  syscall
    # fail:
    "c70424ffffffff"              # 0cf  mov dword [rsp],0xffffffff
    # report:
    "f7d8"                        # 0d6  neg eax
    "89442404"                    # 0d8  mov dword [rsp+0x4],eax
    "418b3c24"                    # 0dc  mov edi,dword [r12]
    "4889e6"                      # 0e0  mov rsi,rsp
    "ba08000000"                  # 0e3  mov edx,0x8
    "b801000000"                  # 0e8  mov eax,0x1
    "0f05"                        # 0ed  syscall
    # quit:
    "bf01000000"                  # 0ef  mov edi,0x1
    "b8e7000000"                  # 0f4  mov eax,0xe7
    "0f05"                        # 0f9  syscall
    # empty:
    "00"                          # 0fb  ""
)
_STACK_SIZE = 1 << 16
CLONE_VM, CLONE_INTO_CGROUP, _SIGCHLD = 0x100, 1 << 33, 17


class Spawner:
    """The machine code, executable in this process, and the child's stack (one child at a
    time: a launch returns only once its child has exec'd)."""

    def __init__(self):
        from capsa.linux import _abi

        pointer, size_t = _abi.ctype("c_void_p"), _abi.ctype("c_size_t")
        mmap = _abi.function("mmap", pointer)
        size = 4096 + _STACK_SIZE
        address = mmap(None, size_t(size), 3, 0x22, -1, _abi.c_long(0))  # read+write, MAP_PRIVATE|MAP_ANONYMOUS
        if not address or address == 2**64 - 1:
            raise OSError(_abi.get_errno(), "mmap: cannot map the spawner")
        (_abi.ctype("c_char") * len(_CODE)).from_address(address)[:] = _CODE
        if _abi.libc.mprotect(pointer(address), size_t(4096), 5) != 0:  # read+exec: never writable and executable at once
            raise OSError(_abi.get_errno(), "mprotect: cannot make the spawner executable")
        self.stack = address + 4096  # below it, the code: a stack overflow faults on it, read-only
        self._spawn = _abi._Function(address)
        self._spawn.restype = _abi.c_long
        self._argv = _abi.string_buffer(b"capsa-init")
        self._pointers = (_abi.ctype("c_void_p") * 3)(_abi.addressof(self._argv), None, None)  # argv, then envp = [NULL]

    def spawn(self, flags: int, cgroup_fd: int | None, channel: int, sources: list[int], executable: int,
              parent_end: int = -1, unshare: int = 0) -> int:
        """The child's pid; OSError if the kernel refuses the clone. `parent_end`: our end of
        the channel, which the child closes (its death or close is then EOF to the child).
        `unshare`: namespaces the child makes itself before it waits for "m" (its failure is
        reported on the channel as u32 0xfffffffe and the errno)."""
        import _signal

        from capsa.linux import _abi

        args = struct.pack("11Q", flags | CLONE_VM | (CLONE_INTO_CGROUP if cgroup_fd is not None else 0), 0, 0, 0,
                           _SIGCHLD, self.stack, _STACK_SIZE, 0, 0, 0, 0 if cgroup_fd is None else cgroup_fd)
        base = _abi.addressof(self._pointers)
        job = _abi.string_buffer(struct.pack(f"<IIQQQiI{len(sources)}I", channel, len(sources), executable, base, base + 16,
                                             parent_end, unshare, *sources))
        blocked = _signal.pthread_sigmask(_signal.SIG_BLOCK, _signal.valid_signals())
        try:
            pid = self._spawn(args, _abi.c_long(len(args)), job)
        finally:
            _signal.pthread_sigmask(_signal.SIG_SETMASK, blocked)
        if pid < 0:
            raise OSError(-pid, f"clone3: {posix.strerror(-pid)}")
        self._job = job  # alive until the next spawn: the child reads it until it execs
        return pid


def sources_above(fds: list[int], lowest: int) -> tuple[list[int], list[int]]:
    """The fds to give the child as its 0, 1, ... (`fds`), each that one of the child's dup2s
    before its own could overwrite (below `lowest`, which is at least their number) replaced by
    a close-on-exec copy at or above `lowest`: (the sources, the copies, ours to close)."""
    import fcntl

    sources, copies = [], []
    for target, fd in enumerate(fds):
        if fd != target and fd < lowest:
            fd = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest)
            copies.append(fd)
        sources.append(fd)
    return sources, copies


_spawner: Spawner | None = None


def spawner() -> Spawner:
    """This process's spawner, made on first use."""
    global _spawner
    if _spawner is None:
        _spawner = Spawner()
    return _spawner
