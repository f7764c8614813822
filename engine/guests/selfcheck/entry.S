/* Entry point, interrupt stubs and the drop to ring 3.
 *
 * Everything here that runs on an interrupt executes in ring 0, which this
 * platform emulates at about a million instructions a second, so the
 * handlers on the timer paths are kept to a handful of instructions. They
 * are correct whether they interrupt ring 3 (the CPU switched to the TSS's
 * rsp0, which is the top of this CPU's ring-0 block) or ring 0 (64-bit
 * iretq always restores SS:RSP, so both cases share one exit). */

#include "selfcheck.h"

        .file   "entry.S"

        .section .text.entry, "ax"
        .code64
        .globl  _start
_start:
        /* rdi = boot-info block, rsi = vCPU index (boot contract). */
        cmp     $MAX_CPUS, %rsi
        jae     park
        mov     %rsi, %rax
        inc     %rax
        imul    $KBLOCK_SIZE, %rax, %rax
        lea     kblocks(%rip), %rsp
        add     %rax, %rsp
        xor     %ebp, %ebp
        call    kmain
park:
        cli
1:      hlt
        jmp     1b

        .text

/* Exceptions: push a uniform frame (vector, error code) and report. */
        .macro  EXC vec, has_err
        .balign 16
exc_\vec:
        .if     \has_err == 0
        push    $0
        .endif
        push    $\vec
        jmp     exception_common
        .endm

        EXC 0,0;  EXC 1,0;  EXC 2,0;  EXC 3,0;  EXC 4,0;  EXC 5,0;  EXC 6,0;  EXC 7,0
        EXC 8,1;  EXC 9,0;  EXC 10,1; EXC 11,1; EXC 12,1; EXC 13,1; EXC 14,1; EXC 15,0
        EXC 16,0; EXC 17,1; EXC 18,0; EXC 19,0; EXC 20,0; EXC 21,1; EXC 22,0; EXC 23,0
        EXC 24,0; EXC 25,0; EXC 26,0; EXC 27,0; EXC 28,0; EXC 29,1; EXC 30,1; EXC 31,0

exception_common:
        mov     %rsp, %rdi
        and     $-16, %rsp
        call    exception_report        /* does not return */
        jmp     park

/* IRQ0 from the PIT through the 8259, vCPU 0 only: the guest clock.
 * The crash request is tested here because ring 3 cannot reach ring 0 on
 * its own on this platform (int N and syscall do not arrive). */
        .balign 16
        .globl  irq_pit
irq_pit:
        push    %rax
        mov     $0x20, %al
        out     %al, $0x20
        incq    clock_ticks(%rip)
        cmpq    $0, crash_request(%rip)
        jne     crash_now
        pop     %rax
        iretq

crash_now:
        cmpq    $CRASH_INTERNAL, crash_request(%rip)
        je      1f
        /* With an empty IDT the #UD cannot be delivered, nor the #GP that
         * raises, nor the #DF after it: a triple fault (KVM_EXIT_SHUTDOWN). */
        lidt    null_idtr(%rip)
        ud2
1:      /* int3 in ring 0 is not emulated here: KVM_EXIT_INTERNAL_ERROR. */
        int3
        jmp     park

/* LAPIC timer on the other vCPUs: counts this CPU's own interrupts, found
 * through the %rsp alignment of the ring-0 block. */
        .balign 16
        .globl  irq_lapic_timer
irq_lapic_timer:
        push    %rax
        mov     %rsp, %rax
        and     $-KBLOCK_SIZE, %rax
        incq    PERCPU_LTICKS(%rax)
        mov     $(LAPIC_BASE + LAPIC_EOI), %eax
        movl    $0, (%rax)
        pop     %rax
        iretq

/* Spurious IRQ7 from the master PIC and spurious LAPIC vector: no EOI. */
        .balign 16
        .globl  irq_spurious
irq_spurious:
        iretq

/* Spurious IRQ15 from the slave: the master saw a real IRQ2 and wants its EOI. */
        .balign 16
        .globl  irq_pic2_spurious
irq_pic2_spurious:
        push    %rax
        mov     $0x20, %al
        out     %al, $0x20
        pop     %rax
        iretq

/* enter_user(rip, rsp, boot_info, cpu): iretq to ring 3 with IOPL 3 and IF set. */
        .balign 16
        .globl  enter_user
enter_user:
        mov     $SEL_UDATA, %ax
        mov     %ax, %ds
        mov     %ax, %es
        push    $SEL_UDATA
        push    %rsi
        push    $0x3202
        push    $SEL_UCODE
        push    %rdi
        mov     %rdx, %rdi
        mov     %rcx, %rsi
        xor     %eax, %eax
        xor     %edx, %edx
        xor     %ecx, %ecx
        iretq

        .section .rodata
        .balign 8
        .globl  exception_stubs
exception_stubs:
        .irp    v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        .quad   exc_\v
        .endr

        .balign 16
null_idtr:
        .word   0
        .quad   0

/* The guest clock, alone on its page. */
        .section .bss.clock, "aw", @nobits
        .balign 4096
        .globl  clock_ticks
clock_ticks:
        .skip   8
        .globl  crash_request
crash_request:
        .skip   8
        .balign 4096

        .section .note.GNU-stack, "", @progbits
