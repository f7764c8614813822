/* Definitions shared by the ring-0 setup, the interrupt stubs and the ring-3 workload. */
#ifndef SELFCHECK_H
#define SELFCHECK_H

#define MAX_CPUS        32          /* the VMM's limit (boot/layout.py MAX_VCPUS) */

/* Each CPU's ring-0 block: struct percpu at its base, its ring-0 stack above.
 * The block is aligned to its size so a handler finds its CPU's data from
 * %rsp alone, without touching an MSR or the LAPIC (both cost exits here). */
#define KBLOCK_SIZE     8192
#define USTACK_SIZE     8192

#define PERCPU_MAGIC    0x5543504652524546  /* "FERRFPCU" */
#define PERCPU_LTICKS   8                   /* offsetof(struct percpu, local_ticks) */

#define SEL_KCODE       0x08
#define SEL_KDATA       0x10
#define SEL_UDATA       0x1b                /* GDT index 3, RPL 3 */
#define SEL_UCODE       0x23                /* GDT index 4, RPL 3 */
#define SEL_TSS         0x28

#define VEC_PIT         0x20                /* PIC master remapped to 0x20-0x27 */
#define VEC_PIC_SPUR    0x27
#define VEC_PIC2_SPUR   0x2f
#define VEC_LAPIC_TIMER 0x40
#define VEC_LAPIC_SPUR  0xff

#define LAPIC_BASE      0xfee00000
#define LAPIC_EOI       0xb0

#define CRASH_TRIPLE    1
#define CRASH_INTERNAL  2

#define TICK_HZ         100
#define MS_PER_TICK     (1000 / TICK_HZ)

#ifndef __ASSEMBLER__

typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long uint64_t;
typedef long int64_t;
typedef unsigned long size_t;

_Static_assert(sizeof(uint64_t) == 8, "LP64");

struct boot_info {
    uint32_t magic;
    uint32_t version;
    uint64_t ram_bytes;
    uint32_t cpu_count;
    uint32_t e820_count;
    uint64_t cmdline_addr;
    uint32_t cmdline_len;
    uint32_t reserved;
    uint64_t acpi_rsdp_addr;
    struct e820_entry {
        uint64_t addr;
        uint64_t size;
        uint32_t type;
        uint32_t pad;
    } e820[];
};
#define BOOT_INFO_MAGIC 0x59525246

struct percpu {
    uint64_t magic;
    volatile uint64_t local_ticks;          /* LAPIC timer interrupts (CPUs other than 0) */
    uint64_t cpu;
    uint64_t gdt[7];
};
_Static_assert(__builtin_offsetof(struct percpu, local_ticks) == PERCPU_LTICKS, "asm offset");

/* Written by the IRQ0 handler on vCPU 0, read by every CPU in ring 3. */
extern volatile uint64_t clock_ticks;
/* Set by ring 3; the IRQ0 handler acts on it (ring 3 has no other way into ring 0 here). */
extern volatile uint64_t crash_request;

extern uint8_t kblocks[MAX_CPUS][KBLOCK_SIZE];
extern uint8_t ustacks[MAX_CPUS][USTACK_SIZE];
extern char __image_start[], __image_end[];

static inline struct percpu *percpu_of(uint64_t cpu)
{
    return (struct percpu *)kblocks[cpu];
}

static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline void outw(uint16_t port, uint16_t v)
{
    __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint16_t inw(uint16_t port)
{
    uint16_t v;
    __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline void cpu_relax(void)
{
    __asm__ volatile("pause" ::: "memory");
}

/* lib.c: usable in both rings (port I/O is allowed to ring 3 for COM1). */
struct line {
    char buf[256];
    size_t len;
};
void line_str(struct line *l, const char *s);
void line_dec(struct line *l, uint64_t v);
void line_hex(struct line *l, uint64_t v, int digits);
void serial_write(const char *s, size_t len);
void console_lock(void);
void console_unlock(void);
void line_emit(struct line *l);
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);

/* Ring 3. */
void user_main(struct boot_info *bi, uint64_t cpu) __attribute__((noreturn));

/* entry.S */
void enter_user(void (*rip)(struct boot_info *, uint64_t), uint64_t rsp,
                struct boot_info *bi, uint64_t cpu) __attribute__((noreturn));
extern const uint64_t exception_stubs[32];
void irq_pit(void);
void irq_lapic_timer(void);
void irq_spurious(void);
void irq_pic2_spurious(void);

#endif /* __ASSEMBLER__ */
#endif
