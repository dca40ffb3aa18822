# qmpd's guest: the "counter" program (x86-64, long mode, CPL3, no stack, no interrupts).
#
# Entered by the VMM at _start with paging on and guest RAM identity-mapped. Reads its
# parameters from the config page (written by the VMM at boot; migrates with RAM), then
# runs forever. Step n (0-based):
#   1. writes d pages of the working set: write counter c = n*d .. n*d+d-1, page
#      (c mod W) gets its first u64 set to n+1; the sum of first u64s is kept incrementally
#   2. every check_every steps replaces the sum by a full scan of the working set
#   3. waits for a free ring slot (doorbell "full" exit), writes "seq=<n> sum=<16 hex>\n"
#      right-aligned into slot (prod mod slots) with its length in byte 0, bumps prod
#      (the fixed tail takes 5 stores, so a store-hooking dirty log stays cheap)
#   4. every `batch` records rings the doorbell, then busy-loops `pace` iterations
# Deterministic: no rdtsc, no rdrand, nothing but RAM and registers.
#
# Registers: rbx=n  rbp=c mod W  r8=sum  r9=steps to next scan  r10=prod
#            r11=records since doorbell  r12=ws base  r13=W  r14=d  r15=pace

    .code64
    .text
    .globl _start

    .equ CFG, 0x1000                 # config page (layout.py: CONFIG_GPA)
    .equ CFG_MAGIC, CFG + 0
    .equ CFG_WS_BASE, CFG + 8
    .equ CFG_WS_PAGES, CFG + 16
    .equ CFG_DIRTY, CFG + 24
    .equ CFG_PACE, CFG + 32
    .equ CFG_CHECK, CFG + 40
    .equ CFG_RING_BASE, CFG + 48
    .equ CFG_RING_SLOTS, CFG + 56
    .equ CFG_BATCH, CFG + 64
    .equ HDR, 0x2000                 # ring header page (layout.py: RING_HDR_GPA)
    .equ HDR_PROD, HDR + 0
    .equ HDR_CONS, HDR + 64
    .equ PORT_DOORBELL, 0x510
    .equ PORT_ERROR, 0x511
    .equ MAGIC, 0x31544e4344504d51   # "QMPDCNT1"

_start:
    movabs $MAGIC, %rax
    cmp CFG_MAGIC, %rax
    jne bad_config
    mov CFG_WS_BASE, %r12
    mov CFG_WS_PAGES, %r13
    mov CFG_DIRTY, %r14
    mov CFG_PACE, %r15
    test %r13, %r13
    jz bad_config
    xor %ebx, %ebx
    xor %ebp, %ebp
    xor %r8d, %r8d
    mov CFG_CHECK, %r9
    mov HDR_PROD, %r10
    xor %r11d, %r11d

step:
    # 1. dirty d pages
    mov %r14, %rcx
    lea 1(%rbx), %rax
    test %rcx, %rcx
    jz 2f
1:  mov %rbp, %rdi
    shl $12, %rdi
    add %r12, %rdi
    mov (%rdi), %rdx
    mov %rax, (%rdi)
    add %rax, %r8
    sub %rdx, %r8
    inc %rbp
    cmp %r13, %rbp
    jb 3f
    xor %ebp, %ebp
3:  dec %rcx
    jnz 1b
2:
    # 2. full scan every check_every steps (0: never)
    test %r9, %r9
    jz 5f
    dec %r9
    jnz 5f
    mov CFG_CHECK, %r9
    xor %eax, %eax
    mov %r12, %rdi
    mov %r13, %rcx
4:  add (%rdi), %rax
    add $4096, %rdi
    dec %rcx
    jnz 4b
    mov %rax, %r8
5:
    # 3. wait for a free slot
6:  mov %r10, %rax
    sub HDR_CONS, %rax
    cmp CFG_RING_SLOTS, %rax
    jb 7f
    mov $PORT_DOORBELL, %dx
    mov $1, %al
    out %al, %dx
    xor %r11d, %r11d
    jmp 6b
7:  mov CFG_RING_SLOTS, %rdi
    dec %rdi
    and %r10, %rdi
    shl $6, %rdi
    add CFG_RING_BASE, %rdi
    # The fixed tail " sum=<16 hex>\n" (bytes 42..63) with few stores: the hex digits
    # are assembled in %rdx, most significant nibble first, 8 per qword store.
    movb $10, 63(%rdi)
    movl $0x6d757320, 42(%rdi)       # " sum"
    movb $61, 46(%rdi)               # "="
    mov %r8, %rax
    xor %edx, %edx
    mov $16, %ecx
8:  rol $4, %rax
    mov %eax, %esi
    and $15, %esi
    cmp $10, %esi
    jb 9f
    add $39, %esi                    # 'a' - 10 - '0'
9:  add $48, %esi
    shr $8, %rdx
    shl $56, %rsi
    or %rsi, %rdx
    cmp $9, %ecx
    jne 14f
    mov %rdx, 47(%rdi)               # nibbles 15..8
14: dec %ecx
    jnz 8b
    mov %rdx, 55(%rdi)               # nibbles 7..0
    lea 42(%rdi), %rsi               # the decimal seq goes right before " sum="
    mov %rbx, %rax
    mov $10, %ecx
10: xor %edx, %edx
    div %rcx
    add $48, %dl
    dec %rsi
    mov %dl, (%rsi)
    test %rax, %rax
    jnz 10b
    sub $4, %rsi
    movl $0x3d716573, (%rsi)         # "seq="
    lea 64(%rdi), %rax
    sub %rsi, %rax
    mov %al, (%rdi)
    inc %r10
    mov %r10, HDR_PROD
    # 4. doorbell per batch, then pace
    inc %r11
    cmp CFG_BATCH, %r11
    jb 11f
    mov $PORT_DOORBELL, %dx
    xor %eax, %eax
    out %al, %dx
    xor %r11d, %r11d
11: mov %r15, %rcx
    test %rcx, %rcx
    jz 13f
12: dec %rcx
    jnz 12b
13: inc %rbx
    jmp step

bad_config:
    mov $PORT_ERROR, %dx
    mov $1, %al
    out %al, %dx
    jmp bad_config
