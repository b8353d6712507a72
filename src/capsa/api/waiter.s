# capsa's slot waiter (capsa.api.waiter): x86-64, Linux, no libc. Assembled with
#   as --64 -o waiter.o waiter.s
# and its .text embedded in capsa/api/waiter.py (tests/unit/test_api_spec.py compares them).
# Started with argc == 1, fd 0 the pool's socket, fd 3 the agent's status pipe (see the module).
.intel_syntax noprefix
.set BUF, 0x600000          # the request (bss: the second PT_LOAD segment)
.set BUFSIZE, 0x100000
.set CBUF, 0x700000         # its ancillary data: the three stdio fds
.set MSG, 0x700040          # struct msghdr
.set IOV, 0x700080          # struct iovec
.set STATUS, 0x700090       # what is written on fd 3
.set PTRS, 0x701000         # argv[] then envp[]
.set MAXPTRS, 0x20000
.text
.globl _start
_start:
    cmp qword ptr [rsp], 1          # argc: an interpreter (#!/proc/self/exe) gets 2 or more
    jne refuse
    mov qword ptr [IOV], BUF
    mov qword ptr [IOV+8], BUFSIZE-1    # a NUL always follows the request
    mov qword ptr [MSG+16], IOV     # msg_iov
    mov qword ptr [MSG+24], 1       # msg_iovlen
    mov qword ptr [MSG+32], CBUF    # msg_control
    mov qword ptr [MSG+40], 64      # msg_controllen
    xor edi, edi
    mov esi, MSG
    mov edx, 0x40000000             # MSG_CMSG_CLOEXEC: the received fds do not outlive the exec
    mov eax, 47                     # recvmsg(0, &msg, MSG_CMSG_CLOEXEC)
    syscall
    test rax, rax
    jle quit                        # EOF: the pool closed the socket
    cmp byte ptr [BUF], 'R'
    jne bad
    cmp qword ptr [CBUF], 28        # cmsg_len: one cmsghdr and three fds
    jne bad
    cmp dword ptr [CBUF+8], 1       # SOL_SOCKET
    jne bad
    cmp dword ptr [CBUF+12], 1      # SCM_RIGHTS
    jne bad
    mov byte ptr [STATUS], 'T'      # taken
    mov edi, 3
    mov esi, STATUS
    mov edx, 1
    mov eax, 1                      # write(3, "T", 1)
    syscall
    xor ebx, ebx
dup_next:                           # dup2(fds[i], i) for i in 0, 1, 2 (over the socket too)
    mov edi, dword ptr [CBUF+16+rbx*4]
    mov esi, ebx
    mov eax, 33
    syscall
    mov r8b, 'd'
    test rax, rax
    js fail
    inc ebx
    cmp ebx, 3
    jb dup_next
    mov rsi, BUF+13                 # after "R" and three counts (u32): candidates, args, env
    mov r12, rsi                    # r12: the cwd
    call skip
    mov r13, rsi                    # r13: the first candidate path
    mov ecx, dword ptr [BUF+1]
skip_candidates:
    jrcxz candidates_skipped
    call skip
    dec ecx
    jmp skip_candidates
candidates_skipped:
    mov ecx, dword ptr [BUF+5]
    mov edx, dword ptr [BUF+9]
    lea rax, [rcx+rdx+2]
    cmp rax, MAXPTRS
    ja bad
    mov edi, PTRS
    mov r14, rdi                    # r14: argv
    call fill
    mov r15, rdi                    # r15: envp
    mov ecx, edx
    call fill
    mov rdi, r12
    mov eax, 80                     # chdir(cwd)
    syscall
    mov r8b, 'c'
    test rax, rax
    js fail
    mov edi, 3
    mov esi, 3
    mov edx, 4
    mov eax, 436                    # close_range(3, 3, CLOSE_RANGE_CLOEXEC): fd 3 only if exec fails
    syscall
    mov r8b, 'f'
    test rax, rax
    js fail
    mov ebx, dword ptr [BUF+1]
    mov rbp, r13
    mov r12d, 2                     # ENOENT, unless a candidate fails otherwise (as execvp)
try_next:
    test ebx, ebx
    jz exec_failed
    mov rdi, rbp
    mov rsi, r14
    mov rdx, r15
    mov eax, 59                     # execve(candidate, argv, envp)
    syscall
    neg eax
    cmp eax, 2
    je not_first
    cmp r12d, 2
    jne not_first
    mov r12d, eax
not_first:
    mov rsi, rbp
    call skip
    mov rbp, rsi
    dec ebx
    jmp try_next
exec_failed:
    mov r8b, 'x'
    mov eax, r12d
    neg rax
fail:                               # write(3, "E\0" step errno(u32), 7); exit 127
    neg eax
    mov byte ptr [STATUS], 'E'
    mov byte ptr [STATUS+1], 0
    mov byte ptr [STATUS+2], r8b
    mov dword ptr [STATUS+3], eax
    mov edi, 3
    mov esi, STATUS
    mov edx, 7
    mov eax, 1
    syscall
    mov edi, 127
    jmp leave
refuse:
    mov edi, 126
    jmp leave
bad:
    mov edi, 1
    jmp leave
quit:
    xor edi, edi
leave:
    mov eax, 231                    # exit_group
    syscall
skip:                               # rsi: past the next NUL
    lodsb
    test al, al
    jnz skip
    ret
fill:                               # rcx pointers to the strings at rsi, then NULL, at rdi
    jrcxz filled
    mov qword ptr [rdi], rsi
    add rdi, 8
    call skip
    dec ecx
    jmp fill
filled:
    mov qword ptr [rdi], 0
    add rdi, 8
    ret
