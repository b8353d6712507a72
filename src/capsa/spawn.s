# capsa's spawner of planned inits (capsa.spawn): x86-64, Linux, no libc. Assembled with
#   as --64 -o spawn.o spawn.s
# and its .text embedded in capsa/spawn.py (tests/unit/test_spawn.py compares them).
# Called from Python (System V ABI): long spawn(struct clone_args *args, size_t size, struct job *job)
#   struct job { u32 channel; u32 count; u64 executable; u64 argv; u64 envp; i32 parent_end;
#                u32 unshare; u32 sources[count]; }
# clone3 with CLONE_VM: the child shares the caller's memory (no copy of its page tables, none of
# its pages write-protected) on its own stack (args->stack) until it execs. Returns the child's pid,
# or -errno. The child closes its copy of the parent's end of the channel (so that the parent's
# death is EOF to it), makes the namespaces job->unshare names (if any: unshare), waits for "m"
# on the channel (its maps are written), becomes root of its user namespace, dup2s sources[i] to
# fd i, and execveat(executable, "", argv, envp, AT_EMPTY_PATH). On failure it writes u32
# 0xfffffffe (the unshare) or 0xffffffff (the rest) and u32 errno on the channel and exits 1.
.intel_syntax noprefix
.text
.globl spawn
spawn:
    mov r8, rdx                     # the job: kept in the child (registers are copied)
    mov eax, 435                    # clone3(args, size)
    syscall
    test rax, rax
    jz child
    ret
child:
    mov r12, r8
    mov edi, dword ptr [r12+32]
    mov eax, 3                      # close(parent_end): -1 is EBADF, harmless
    syscall
    sub rsp, 16
    mov edi, dword ptr [r12+36]
    test edi, edi
    jz await_maps
    mov eax, 272                    # unshare(job->unshare)
    syscall
    test rax, rax
    jz await_maps
    mov dword ptr [rsp], -2
    jmp report
await_maps:
    mov edi, dword ptr [r12]
    mov rsi, rsp
    mov edx, 1
    xor eax, eax                    # read(channel, rsp, 1)
    syscall
    cmp rax, 1
    jne quit                        # the parent is gone
    cmp byte ptr [rsp], 'm'
    jne quit
    xor edi, edi
    xor esi, esi
    xor edx, edx
    mov eax, 119                    # setresgid(0, 0, 0)
    syscall
    test rax, rax
    jnz fail
    xor edi, edi
    xor esi, esi
    xor edx, edx
    mov eax, 117                    # setresuid(0, 0, 0)
    syscall
    test rax, rax
    jnz fail
    xor ebx, ebx
dup_next:
    cmp ebx, dword ptr [r12+4]
    jae dup_done
    mov edi, dword ptr [r12+rbx*4+40]
    mov esi, ebx
    mov eax, 33                     # dup2(sources[i], i)
    syscall
    test rax, rax
    js fail
    inc ebx
    jmp dup_next
dup_done:
    mov rdi, [r12+8]
    lea rsi, [rip+empty]
    mov rdx, [r12+16]
    mov r10, [r12+24]
    mov r8d, 0x1000                 # AT_EMPTY_PATH
    mov eax, 322                    # execveat(executable, "", argv, envp, AT_EMPTY_PATH)
    syscall
fail:                               # rax: -errno
    mov dword ptr [rsp], -1
report:
    neg eax
    mov dword ptr [rsp+4], eax
    mov edi, dword ptr [r12]
    mov rsi, rsp
    mov edx, 8
    mov eax, 1                      # write(channel, rsp, 8)
    syscall
quit:
    mov edi, 1
    mov eax, 231                    # exit_group(1)
    syscall
empty:
    .byte 0
