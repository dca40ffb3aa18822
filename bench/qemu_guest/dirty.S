/* A multiboot guest for bench/qemu_colo.py: QEMU boots it with -kernel (32-bit protected
 * mode, paging off) and it writes one word in each of NPAGES pages from 4 MiB up, round
 * robin, forever, so that every COLO epoch dirties those NPAGES pages (plus a few of
 * QEMU's own), and counts its passes in the word at 0x3FF000 (read with HMP `xp`).
 * Assembled with `as --32 --defsym NPAGES=...`, linked at 1 MiB. */
    .code32
    .text
    .align 4
    .long 0x1BADB002            /* multiboot magic */
    .long 0                     /* flags: nothing asked of the loader */
    .long -(0x1BADB002)         /* checksum */
    .globl _start
_start:
    cli
    mov $0x80000, %esp
0:  xor %esi, %esi
1:  mov %esi, %eax
    shl $12, %eax
    add $0x400000, %eax
    incl (%eax)
    inc %esi
    cmp $NPAGES, %esi
    jb 1b
    incl 0x3FF000
    jmp 0b
