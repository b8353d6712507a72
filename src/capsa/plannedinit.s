# capsa's planned init (capsa.plannedinit): x86-64, Linux, no libc. Assembled with
#   as --64 -o plannedinit.o plannedinit.s
# and its .text embedded in capsa/plannedinit.py (tests/unit/test_plannedinit.py compares them).
# Started with argc == 1 and fd 3 the plan (a memfd), fd 4 the channel to the parent: reads the
# plan, closes fd 3 and carries out the plan's steps in order (see the module for their layout).
# A step that fails is reported on fd 4 as two u32 (the step's index, the errno) and the
# process exits 1. The last step is the user's program's execve: on success nothing is written.
.intel_syntax noprefix
.set PLAN, 0x600000         # the plan (bss: the second PT_LOAD segment)
.set PLANSIZE, 0x100000
.set REPORT, 0x700000       # what a failure writes on fd 4
.set STEP, 80               # bytes per step
.set CALL, 0
.set TEST, 1
.set FAIL, 2
.set SKIP, 3
.set EXACT, 1               # the result must be the step's `want`
.set TRY, 2                 # a failure is remembered (exec candidates), not fatal
.set SOFT, 4                # failing with the step's errno (a TEST: not matching) skips `skip` steps
.set ANY, 8                 # with SOFT: failing with any errno skips
.set UNEXPECTED, 0x10000    # the errno reported for a result that is not the one planned
.text
.globl _start
_start:
    cmp qword ptr [rsp], 1          # argc: an interpreter (#!/proc/self/exe) gets 2 or more
    jne refuse
    mov edi, 3
    mov esi, PLAN
    mov edx, PLANSIZE
    xor r10d, r10d
    mov eax, 17                     # pread64(3, PLAN, PLANSIZE, 0)
    syscall
    cmp rax, 16
    jl bad
    mov edi, 3
    mov eax, 3                      # close(3)
    syscall
    mov r13d, dword ptr [PLAN]      # the number of steps
    mov r12d, PLAN+16               # the first step
    xor r14d, r14d                  # its index
    mov r15d, 2                     # the errno of the exec candidates: ENOENT unless another
next:
    cmp r14d, r13d
    jae fail_saved                  # a plan ends with its exec: never reached
    mov eax, dword ptr [r12]        # the kind of step
    cmp eax, TEST
    je test
    cmp eax, FAIL
    je fail_saved
    cmp eax, SKIP
    je skip
    mov rax, [r12+8]                # CALL: the system call's number and six arguments
    mov rdi, [r12+16]
    mov rsi, [r12+24]
    mov rdx, [r12+32]
    mov r10, [r12+40]
    mov r8, [r12+48]
    mov r9, [r12+56]
    syscall
    mov ecx, dword ptr [r12+4]      # flags
    cmp rax, -4095
    jae failed                      # -4095 .. -1: an error
    test ecx, EXACT
    jz advance
    cmp rax, [r12+64]
    je advance
    mov eax, UNEXPECTED
    jmp fail
failed:
    neg eax                         # the errno
    test ecx, SOFT
    jz not_soft
    test ecx, ANY
    jnz skip
    cmp eax, dword ptr [r12+76]
    je skip
not_soft:
    test ecx, TRY
    jz fail
    cmp eax, 2                      # as execvp: the first error that is not ENOENT is the one
    je advance
    cmp r15d, 2
    jne advance
    mov r15d, eax
    jmp advance
test:                               # TEST: (*(u64 *)a0 & a1) == a2
    mov rdi, [r12+16]
    mov rax, [rdi]
    and rax, [r12+24]
    cmp rax, [r12+32]
    je advance
    test dword ptr [r12+4], SOFT
    jnz skip
    mov eax, 22                     # EINVAL
    jmp fail
skip:                               # the next `skip` steps are not carried out
    mov ebx, dword ptr [r12+72]
    jmp forward
advance:
    xor ebx, ebx
forward:
    inc ebx
    add r14d, ebx
    imul ebx, ebx, STEP
    add r12, rbx
    jmp next
fail_saved:
    mov eax, r15d
fail:                               # eax: the errno; r14d: the step
    mov dword ptr [REPORT], r14d
    mov dword ptr [REPORT+4], eax
    mov edi, 4
    mov esi, REPORT
    mov edx, 8
    mov eax, 1                      # write(4, REPORT, 8)
    syscall
bad:
    mov edi, 1
    jmp leave
refuse:
    mov edi, 126
leave:
    mov eax, 231                    # exit_group
    syscall
