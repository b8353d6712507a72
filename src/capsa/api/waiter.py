"""The slot waiter of a pooled sandbox: a small static program (x86-64 machine code, no libc)
that a prepared slot (capsa.api.agent) execs once it is set up, to wait for its run's request
in a process of a few KB instead of a fork of Python, and to start the run with a single exec.

Why: a slot that waits as Python holds about 1.2 MiB of pages of its own (every object Python
touches after the fork is copied), makes its agent's copies its alone too, and must exec the run
from a large address space (tearing it down costs ~0.5 ms) through the trampoline (one exec
more). The waiter is exec'd while the slot is idle, ahead of the request; a run then costs one
recvmsg, three dup2, a chdir and its execve.

    argv = ["capsa-slot"]; fd 0: the pool's socket; fd 3: the agent's status pipe (not
    close-on-exec); every other fd closed; the process already the run's but for its exec
    (namespaces, mounts, rlimits, no capabilities, no_new_privs, seccomp, signals).
    request (one SOCK_SEQPACKET message, < 1 MiB, with the run's stdin, stdout, stderr as
    SCM_RIGHTS): b"R", three u32 (little endian): candidates, args, env; then NUL-terminated
    strings: the cwd, the candidate paths of the program, argv, env ("NAME=value").
    It writes b"T" on fd 3 (the request is taken), makes the three fds its 0-2 (over the
    socket), chdirs (inside the sandbox's root, which is its root: nothing outside is
    reachable), makes fd 3 close-on-exec and execs each candidate in turn (as execvp). If that
    fails it writes b"E\\0" + step (b"d" dup2, b"c" chdir, b"f" close_range, b"x" exec) + errno
    (u32) on fd 3 and exits 127. EOF on the socket (the pool closed it): exit 0. Started with
    more than one argument (as the interpreter of a "#!/proc/self/exe" script: it is exec'd from a
    sealed memfd, as the trampoline is): exit 126.

Its assembly source is waiter.s, next to this module; the unit tests assemble it (GNU as) where
they can and compare. Other architectures keep the slot in Python (supported()).
"""

from __future__ import annotations

import _struct as struct
import posix

from capsa import tinyelf

_BSS, _BSS_SIZE = 0x600000, 0x201000  # request, ancillary data, msghdr, argv and envp (see waiter.s)
MESSAGE_MAX = 0x100000 - 1
MAX_STRINGS = 0x20000 - 2
_CODE = bytes.fromhex(
    "48833c2401"                  # 000  cmp qword [rsp],0x1
    "0f85f4010000"                # 005  jne 1ff
    "48c704258000700000006000"    # 00b  mov qword 0x700080,0x600000
    "48c7042588007000ffff0f00"    # 017  mov qword 0x700088,0xfffff
    "48c704255000700080007000"    # 023  mov qword 0x700050,0x700080
    "48c704255800700001000000"    # 02f  mov qword 0x700058,0x1
    "48c704256000700000007000"    # 03b  mov qword 0x700060,0x700000
    "48c704256800700040000000"    # 047  mov qword 0x700068,0x40
    "31ff"                        # 053  xor edi,edi
    "be40007000"                  # 055  mov esi,0x700040
    "ba00000040"                  # 05a  mov edx,0x40000000
    "b82f000000"                  # 05f  mov eax,0x2f
    "0f05"                        # 064  syscall
    "4885c0"                      # 066  test rax,rax
    "0f8e9e010000"                # 069  jle 20d
    "803c250000600052"            # 06f  cmp byte 0x600000,0x52
    "0f8589010000"                # 077  jne 206
    "48833c25000070001c"          # 07d  cmp qword 0x700000,0x1c
    "0f857a010000"                # 086  jne 206
    "833c250800700001"            # 08c  cmp dword 0x700008,0x1
    "0f856c010000"                # 094  jne 206
    "833c250c00700001"            # 09a  cmp dword 0x70000c,0x1
    "0f855e010000"                # 0a2  jne 206
    "c604259000700054"            # 0a8  mov byte 0x700090,0x54
    "bf03000000"                  # 0b0  mov edi,0x3
    "be90007000"                  # 0b5  mov esi,0x700090
    "ba01000000"                  # 0ba  mov edx,0x1
    "b801000000"                  # 0bf  mov eax,0x1
    "0f05"                        # 0c4  syscall
    "31db"                        # 0c6  xor ebx,ebx
    # dup_next:
    "8b3c9d10007000"              # 0c8  mov edi,dword [rbx*4+0x700010]
    "89de"                        # 0cf  mov esi,ebx
    "b821000000"                  # 0d1  mov eax,0x21
    "0f05"                        # 0d6  syscall
    "41b064"                      # 0d8  mov r8b,0x64
    "4885c0"                      # 0db  test rax,rax
    "0f88dd000000"                # 0de  js 1c1
    "ffc3"                        # 0e4  inc ebx
    "83fb03"                      # 0e6  cmp ebx,0x3
    "72dd"                        # 0e9  jb c8
    "48c7c60d006000"              # 0eb  mov rsi,0x60000d
    "4989f4"                      # 0f2  mov r12,rsi
    "e81c010000"                  # 0f5  call 216
    "4989f5"                      # 0fa  mov r13,rsi
    "8b0c2501006000"              # 0fd  mov ecx,dword 0x600001
    # skip_candidates:
    "e309"                        # 104  jrcxz 10f
    "e80b010000"                  # 106  call 216
    "ffc9"                        # 10b  dec ecx
    "ebf5"                        # 10d  jmp 104
    # candidates_skipped:
    "8b0c2505006000"              # 10f  mov ecx,dword 0x600005
    "8b142509006000"              # 116  mov edx,dword 0x600009
    "488d441102"                  # 11d  lea rax,[rcx+rdx*1+0x2]
    "483d00000200"                # 122  cmp rax,0x20000
    "0f87d8000000"                # 128  ja 206
    "bf00107000"                  # 12e  mov edi,0x701000
    "4989fe"                      # 133  mov r14,rdi
    "e8e1000000"                  # 136  call 21c
    "4989ff"                      # 13b  mov r15,rdi
    "89d1"                        # 13e  mov ecx,edx
    "e8d7000000"                  # 140  call 21c
    "4c89e7"                      # 145  mov rdi,r12
    "b850000000"                  # 148  mov eax,0x50
    "0f05"                        # 14d  syscall
    "41b063"                      # 14f  mov r8b,0x63
    "4885c0"                      # 152  test rax,rax
    "786a"                        # 155  js 1c1
    "bf03000000"                  # 157  mov edi,0x3
    "be03000000"                  # 15c  mov esi,0x3
    "ba04000000"                  # 161  mov edx,0x4
    "b8b4010000"                  # 166  mov eax,0x1b4
    "0f05"                        # 16b  syscall
    "41b066"                      # 16d  mov r8b,0x66
    "4885c0"                      # 170  test rax,rax
    "784c"                        # 173  js 1c1
    "8b1c2501006000"              # 175  mov ebx,dword 0x600001
    "4c89ed"                      # 17c  mov rbp,r13
    "41bc02000000"                # 17f  mov r12d,0x2
    # try_next:
    "85db"                        # 185  test ebx,ebx
    "742f"                        # 187  je 1b8
    "4889ef"                      # 189  mov rdi,rbp
    "4c89f6"                      # 18c  mov rsi,r14
    "4c89fa"                      # 18f  mov rdx,r15
    "b83b000000"                  # 192  mov eax,0x3b
    "0f05"                        # 197  syscall
    "f7d8"                        # 199  neg eax
    "83f802"                      # 19b  cmp eax,0x2
    "7409"                        # 19e  je 1a9
    "4183fc02"                    # 1a0  cmp r12d,0x2
    "7503"                        # 1a4  jne 1a9
    "4189c4"                      # 1a6  mov r12d,eax
    # not_first:
    "4889ee"                      # 1a9  mov rsi,rbp
    "e865000000"                  # 1ac  call 216
    "4889f5"                      # 1b1  mov rbp,rsi
    "ffcb"                        # 1b4  dec ebx
    "ebcd"                        # 1b6  jmp 185
    # exec_failed:
    "41b078"                      # 1b8  mov r8b,0x78
    "4489e0"                      # 1bb  mov eax,r12d
    "48f7d8"                      # 1be  neg rax
    # fail:
    "f7d8"                        # 1c1  neg eax
    "c604259000700045"            # 1c3  mov byte 0x700090,0x45
    "c604259100700000"            # 1cb  mov byte 0x700091,0x0
    "4488042592007000"            # 1d3  mov byte 0x700092,r8b
    "89042593007000"              # 1db  mov dword 0x700093,eax
    "bf03000000"                  # 1e2  mov edi,0x3
    "be90007000"                  # 1e7  mov esi,0x700090
    "ba07000000"                  # 1ec  mov edx,0x7
    "b801000000"                  # 1f1  mov eax,0x1
    "0f05"                        # 1f6  syscall
    "bf7f000000"                  # 1f8  mov edi,0x7f
    "eb10"                        # 1fd  jmp 20f
    # refuse:
    "bf7e000000"                  # 1ff  mov edi,0x7e
    "eb09"                        # 204  jmp 20f
    # bad:
    "bf01000000"                  # 206  mov edi,0x1
    "eb02"                        # 20b  jmp 20f
    # quit:
    "31ff"                        # 20d  xor edi,edi
    # leave:
    "b8e7000000"                  # 20f  mov eax,0xe7
    "0f05"                        # 214  syscall
    # skip:
    "ac"                          # 216  lods al,byte [rsi]
    "84c0"                        # 217  test al,al
    "75fb"                        # 219  jne 216
    "c3"                          # 21b  ret
    # fill:
    "e310"                        # 21c  jrcxz 22e
    "488937"                      # 21e  mov qword [rdi],rsi
    "4883c708"                    # 221  add rdi,0x8
    "e8ecffffff"                  # 225  call 216
    "ffc9"                        # 22a  dec ecx
    "ebee"                        # 22c  jmp 21c
    # filled:
    "48c70700000000"              # 22e  mov qword [rdi],0x0
    "4883c708"                    # 235  add rdi,0x8
    "c3"                          # 239  ret
)


def elf_image() -> bytes:
    return tinyelf.image(_CODE, bss=(_BSS, _BSS_SIZE))


def sealed_fd() -> int:
    """A close-on-exec memfd holding the program, sealed against any change (capsa.tinyelf)."""
    return tinyelf.sealed_memfd("capsa-slot", elf_image())


supported = tinyelf.supported


def candidates(name: str, env: list[str]) -> list[str]:
    """Where the run's program may be, in order (as execvp searches): the name itself if it has a
    slash, else each directory of the environment's PATH."""
    if "/" in name:
        return [name]
    path = next((entry[5:] for entry in env if entry.startswith("PATH=")), "/usr/local/bin:/usr/bin:/bin")
    return [f"{directory or '.'}/{name}" for directory in path.split(":")]


def request(argv: list[str], env: list[str], cwd: str) -> bytes:
    """The request the waiter reads (see the module); ValueError if it cannot hold it."""
    paths = candidates(argv[0], env)
    strings = [cwd, *paths, *argv, *env]
    if len(argv) + len(env) > MAX_STRINGS:
        raise ValueError(f"{len(argv) + len(env)} arguments and environment variables: at most {MAX_STRINGS}")
    data = b"R" + struct.pack("<III", len(paths), len(argv), len(env)) + b"".join(
        s.encode("utf-8", "surrogateescape") + b"\0" for s in strings)
    if len(data) > MESSAGE_MAX:
        raise ValueError(f"the arguments and environment take {len(data)} bytes: at most {MESSAGE_MAX}")
    return data


_STEPS = {b"d": "dup2", b"c": "chdir", b"f": "close_range", b"x": "exec"}


def error_message(error: bytes, argv: list[str], cwd: str) -> str:
    """What the waiter wrote after b"TE" on the status pipe (b"\\0", the step, errno) means,
    worded as capsa.init words it."""
    step, number = error[1:2], int.from_bytes(error[2:6], "little")
    reason = posix.strerror(number).lower() if number else "unknown error"
    name = argv[0]
    if step == b"x":
        if number == 2:
            return (f'exec: "{name}": stat {name}: no such file or directory' if "/" in name
                    else f'exec: "{name}": executable file not found in $PATH')
        return f'exec: "{name}": {reason}'
    if step == b"c":
        return f"process.cwd {cwd!r}: {posix.strerror(number)}"
    return f"{_STEPS.get(step, 'the slot')}: {reason}"
