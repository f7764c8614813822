/* Ring-0 setup: descriptor tables, timers, then the drop to ring 3.
 *
 * Ring 0 is emulated on the platform this guest was made for (about a
 * million instructions a second), so it does the least it can: the
 * privileged loads, the interrupt controllers and the timer. Parsing,
 * memory layout and the whole workload run in ring 3 at native speed. */

#include "selfcheck.h"

uint8_t kblocks[MAX_CPUS][KBLOCK_SIZE] __attribute__((aligned(KBLOCK_SIZE)));
uint8_t ustacks[MAX_CPUS][USTACK_SIZE] __attribute__((aligned(4096)));

struct gate {
    uint16_t off0;
    uint16_t sel;
    uint8_t ist;
    uint8_t type;
    uint16_t off1;
    uint32_t off2;
    uint32_t zero;
};

static struct gate idts[MAX_CPUS][256] __attribute__((aligned(4096)));

struct tss64 {
    uint32_t reserved0;
    uint64_t rsp[3];
    uint64_t reserved1;
    uint64_t ist[7];
    uint64_t reserved2;
    uint16_t reserved3;
    uint16_t iomap_base;
} __attribute__((packed));

_Static_assert(sizeof(struct tss64) == 104, "TSS layout");

#define IOMAP_BYTES 8192

/* All TSSes share one I/O permission bitmap placed right after them, so each
 * TSS reaches it with a 16-bit offset. A clear bit allows the port from ring 3:
 *   0x64          i8042 command (reboot_after)
 *   0x70-0x71     CMOS index/data (boot counter in NVRAM)
 *   0x3f8-0x3ff   COM1
 *   0x600-0x601   ACPI PM1a status (the power button)
 *   0x604-0x605   ACPI PM1a control (poweroff_after; a 16-bit write spans both)
 * The byte after the bitmap must be all ones and inside the TSS limit. */
static struct {
    struct tss64 tss[MAX_CPUS];
    uint8_t iomap[IOMAP_BYTES + 1];
} __attribute__((packed, aligned(64))) tss_area = {
    .iomap = {
        [0x000 ... 0x00b] = 0xff,
        [0x00c] = 0xef,                     /* 0x64 */
        [0x00d] = 0xff,
        [0x00e] = 0xfc,                     /* 0x70, 0x71 */
        [0x00f ... 0x07e] = 0xff,
        [0x07f] = 0x00,                     /* 0x3f8-0x3ff */
        [0x080 ... 0x0bf] = 0xff,
        [0x0c0] = 0xcc,                     /* 0x600, 0x601, 0x604, 0x605 */
        [0x0c1 ... IOMAP_BYTES] = 0xff,
    },
};

struct __attribute__((packed)) dtr {
    uint16_t limit;
    uint64_t base;
};

static void set_gate(struct gate *idt, unsigned vec, uint64_t handler)
{
    struct gate *g = &idt[vec];
    g->off0 = (uint16_t)handler;
    g->sel = SEL_KCODE;
    g->ist = 0;
    g->type = 0x8e;                         /* present, DPL 0, interrupt gate: IF cleared */
    g->off1 = (uint16_t)(handler >> 16);
    g->off2 = (uint32_t)(handler >> 32);
    g->zero = 0;
}

static inline void lapic_write(uint32_t reg, uint32_t value)
{
    *(volatile uint32_t *)(uint64_t)(LAPIC_BASE + reg) = value;
}

static void pic_pit_init(void)
{
    outb(0x20, 0x11);                       /* ICW1: edge, cascade, ICW4 follows */
    outb(0xa0, 0x11);
    outb(0x21, VEC_PIT);                    /* ICW2: vector base */
    outb(0xa1, VEC_PIT + 8);
    outb(0x21, 0x04);                       /* ICW3: slave on IRQ2 */
    outb(0xa1, 0x02);
    outb(0x21, 0x01);                       /* ICW4: 8086 mode, normal EOI */
    outb(0xa1, 0x01);
    outb(0x21, 0xfe);                       /* only IRQ0 */
    outb(0xa1, 0xff);

    enum { PIT_HZ = 1193182, DIVISOR = (PIT_HZ + TICK_HZ / 2) / TICK_HZ };
    outb(0x43, 0x34);                       /* channel 0, lo/hi, mode 2 (rate generator) */
    outb(0x40, DIVISOR & 0xff);
    outb(0x40, DIVISOR >> 8);
}

static void lapic_timer_init(void)
{
    /* KVM's local APIC counts at 1 GHz (one bus cycle per ns), so with the
     * divider at 1 a 10 ms period is ten million counts. */
    lapic_write(0xf0, 0x100 | VEC_LAPIC_SPUR);          /* software-enable */
    lapic_write(0x3e0, 0xb);                            /* divide by 1 */
    lapic_write(0x320, (1u << 17) | VEC_LAPIC_TIMER);   /* periodic */
    lapic_write(0x380, 1000000000u / TICK_HZ);
}

void kmain(struct boot_info *bi, uint64_t cpu) __attribute__((noreturn));
void kmain(struct boot_info *bi, uint64_t cpu)
{
    struct percpu *pc = percpu_of(cpu);
    struct tss64 *tss = &tss_area.tss[cpu];
    uint64_t tss_base = (uint64_t)tss;
    uint16_t iomap_off = (uint16_t)((uint64_t)tss_area.iomap - tss_base);
    uint32_t tss_limit = (uint32_t)iomap_off + IOMAP_BYTES;
    struct gate *idt = idts[cpu];
    struct dtr gdtr, idtr;

    pc->magic = PERCPU_MAGIC;
    pc->cpu = cpu;
    pc->gdt[0] = 0;
    pc->gdt[1] = 0x00af9a000000ffffUL;      /* 0x08 ring-0 code, 64-bit */
    pc->gdt[2] = 0x00cf92000000ffffUL;      /* 0x10 ring-0 data */
    pc->gdt[3] = 0x00cff2000000ffffUL;      /* 0x18 ring-3 data */
    pc->gdt[4] = 0x00affa000000ffffUL;      /* 0x20 ring-3 code, 64-bit */
    pc->gdt[5] = (tss_limit & 0xffff) | ((tss_base & 0xffffff) << 16) | (0x89UL << 40)
               | ((uint64_t)((tss_limit >> 16) & 0xf) << 48) | (((tss_base >> 24) & 0xff) << 56);
    pc->gdt[6] = tss_base >> 32;

    tss->rsp[0] = (uint64_t)pc + KBLOCK_SIZE;
    tss->iomap_base = iomap_off;

    for (unsigned v = 0; v < 32; v++)
        set_gate(idt, v, exception_stubs[v]);
    set_gate(idt, VEC_PIT, (uint64_t)irq_pit);
    set_gate(idt, VEC_PIC_SPUR, (uint64_t)irq_spurious);
    set_gate(idt, VEC_PIC2_SPUR, (uint64_t)irq_pic2_spurious);
    set_gate(idt, VEC_LAPIC_TIMER, (uint64_t)irq_lapic_timer);
    set_gate(idt, VEC_LAPIC_SPUR, (uint64_t)irq_spurious);

    gdtr.limit = sizeof(pc->gdt) - 1;
    gdtr.base = (uint64_t)pc->gdt;
    idtr.limit = 256 * sizeof(struct gate) - 1;
    idtr.base = (uint64_t)idt;
    __asm__ volatile(
        "lgdt %0\n\t"
        "pushq %2\n\t"
        "leaq 1f(%%rip), %%rax\n\t"
        "pushq %%rax\n\t"
        "lretq\n"
        "1:\n\t"
        "movl %3, %%eax\n\t"
        "movw %%ax, %%ss\n\t"
        "movl %4, %%eax\n\t"
        "ltr %%ax\n\t"
        "lidt %1"
        : : "m"(gdtr), "m"(idtr), "i"(SEL_KCODE), "i"(SEL_KDATA), "i"(SEL_TSS)
        : "rax", "memory");

    if (cpu == 0)
        pic_pit_init();
    else
        lapic_timer_init();

    enter_user(user_main, (uint64_t)ustacks[cpu] + USTACK_SIZE - 8, bi, cpu);
}

static uint64_t read_cr2(void)
{
    uint64_t v;
    __asm__ volatile("mov %%cr2, %0" : "=r"(v));
    return v;
}

/* An exception is a bug in this guest or a VMM that broke its state: say
 * where, without the console lock (the faulting code may hold it), and stop
 * this CPU. Its heartbeats stop, which is what tests look for. */
void exception_report(uint64_t *frame) __attribute__((noreturn));
void exception_report(uint64_t *frame)
{
    struct percpu *pc = (struct percpu *)((uint64_t)frame & ~(uint64_t)(KBLOCK_SIZE - 1));
    struct line l = { .len = 0 };

    line_str(&l, "FAULT cpu=");
    if (pc->magic == PERCPU_MAGIC)
        line_dec(&l, pc->cpu);
    else
        line_str(&l, "?");
    line_str(&l, " vector=");
    line_dec(&l, frame[0]);
    line_str(&l, " error=0x");
    line_hex(&l, frame[1], 0);
    line_str(&l, " rip=0x");
    line_hex(&l, frame[2], 0);
    line_str(&l, " cs=0x");
    line_hex(&l, frame[3], 0);
    line_str(&l, " rsp=0x");
    line_hex(&l, frame[5], 0);
    line_str(&l, " cr2=0x");
    line_hex(&l, read_cr2(), 0);
    line_str(&l, "\n");
    serial_write(l.buf, l.len);
    for (;;)
        __asm__ volatile("cli; hlt");
}
