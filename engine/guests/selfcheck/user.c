/* The ring-3 workload: deterministic page writes, continuous verification,
 * heartbeats on COM1. See docs/selfcheck-guest.md for the contract tests
 * rely on.
 *
 * Why a lost write cannot go unreported: every page's expected content is a
 * pure function of this CPU's write count n (kept in a register and mirrored
 * in memory), and every page is read back before each overwrite as well as
 * in a round-robin sweep. Older content (a page restored from an earlier
 * copy of memory), newer content, content of another page, a torn page or a
 * zeroed page all differ from the expectation in at least one qword. */

#include "selfcheck.h"

#define PAGE_SIZE   4096UL
#define QWORDS      (PAGE_SIZE / 8)
#define QSTEP       0x9e3779b97f4a7c15UL    /* odd: consecutive qwords always differ */
#define LOW_LIMIT   0x100000UL              /* the first MiB belongs to the VMM */
#define MAP_LIMIT   0x100000000UL           /* the boot page tables map 4 GiB */
#define MAX_RANGES  72                      /* 32 e820 entries, each split around the image */
#define CMOS_BOOT   0x40                    /* NVRAM byte holding the boot counter */

#define DEFAULT_FILL 50
#define DEFAULT_HB   1000

struct range {
    uint64_t start;
    uint64_t pages;
};

/* Written by vCPU 0 before it sets ready; read-only afterwards. */
static struct {
    volatile uint64_t ready;
    uint64_t cpus;
    uint64_t boot;
    uint64_t fill;
    uint64_t rate;
    uint64_t rate_max;
    uint64_t hb;
    uint64_t crash;
    uint64_t poweroff_after;
    uint64_t reboot_after;
    uint64_t owned_total;
    uint64_t nranges;
    struct range ranges[MAX_RANGES];
} cfg __attribute__((aligned(64)));

/* Memory mirror of each CPU's progress, and its first detected mismatch. */
struct cpu_state {
    volatile uint64_t writes;
    volatile uint64_t verified;
    volatile uint64_t seq;
    uint64_t corrupt;
    uint64_t bad_addr;
    uint64_t bad_expected;
    uint64_t bad_found;
} __attribute__((aligned(64)));

static struct cpu_state states[MAX_CPUS];

/* ---- command line ---- */

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int token_is(const char *s, size_t n, const char *lit)
{
    size_t i = 0;
    for (; i < n && lit[i]; i++)
        if (s[i] != lit[i])
            return 0;
    return i == n && lit[i] == 0;
}

static int parse_u64(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 18)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 1;
}

/* Unknown keys and malformed values are ignored: the banner shows what is in effect. */
static void parse_option(const char *key, size_t klen, const char *val, size_t vlen)
{
    uint64_t v;

    if (token_is(key, klen, "fill")) {
        if (parse_u64(val, vlen, &v))
            cfg.fill = v > 100 ? 100 : v;
    } else if (token_is(key, klen, "rate")) {
        if (token_is(val, vlen, "max")) {
            cfg.rate_max = 1;
            cfg.rate = 0;
        } else if (parse_u64(val, vlen, &v)) {
            cfg.rate_max = 0;
            cfg.rate = v;
        }
    } else if (token_is(key, klen, "hb")) {
        if (parse_u64(val, vlen, &v) && v > 0)
            cfg.hb = v;
    } else if (token_is(key, klen, "crash")) {
        if (token_is(val, vlen, "triple"))
            cfg.crash = CRASH_TRIPLE;
        else if (token_is(val, vlen, "internal"))
            cfg.crash = CRASH_INTERNAL;
    } else if (token_is(key, klen, "poweroff_after")) {
        if (parse_u64(val, vlen, &v))
            cfg.poweroff_after = v;
    } else if (token_is(key, klen, "reboot_after")) {
        if (parse_u64(val, vlen, &v))
            cfg.reboot_after = v;
    }
}

static void parse_cmdline(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len && s[i]) {
        while (i < len && is_space(s[i]))
            i++;
        size_t start = i, eq = 0;
        while (i < len && s[i] && !is_space(s[i])) {
            if (s[i] == '=' && !eq)
                eq = i;
            i++;
        }
        if (eq > start)
            parse_option(s + start, eq - start, s + eq + 1, i - eq - 1);
    }
}

/* ---- memory the workload owns ---- */

static void add_range(uint64_t start, uint64_t end)
{
    if (end > start && cfg.nranges < MAX_RANGES) {
        cfg.ranges[cfg.nranges].start = start;
        cfg.ranges[cfg.nranges].pages = (end - start) / PAGE_SIZE;
        cfg.nranges++;
    }
}

/* Usable RAM: e820 RAM at or above 1 MiB, inside the identity map, minus this image. */
static uint64_t find_usable(const struct boot_info *bi)
{
    uint64_t img_lo = (uint64_t)__image_start & ~(PAGE_SIZE - 1);
    uint64_t img_hi = ((uint64_t)__image_end + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
    uint64_t count = bi->e820_count > 32 ? 32 : bi->e820_count;
    uint64_t total = 0;

    for (uint64_t i = 0; i < count; i++) {
        const struct e820_entry *e = &bi->e820[i];
        if (e->type != 1 || e->addr >= MAP_LIMIT)
            continue;
        uint64_t start = e->addr < LOW_LIMIT ? LOW_LIMIT : e->addr;
        uint64_t end = e->size > MAP_LIMIT - e->addr ? MAP_LIMIT : e->addr + e->size;
        start = (start + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1);
        end &= ~(PAGE_SIZE - 1);
        if (end <= start)
            continue;
        if (img_hi <= start || img_lo >= end) {
            add_range(start, end);
        } else {
            add_range(start, img_lo);
            add_range(img_hi, end);
        }
    }
    for (uint64_t i = 0; i < cfg.nranges; i++)
        total += cfg.ranges[i].pages;
    return total;
}

/* Owned page `index` (0 .. owned_total-1, in address order) to its address. */
static uint64_t gpa_of(uint64_t index)
{
    const struct range *r = cfg.ranges;
    while (index >= r->pages) {
        index -= r->pages;
        r++;
    }
    return r->start + index * PAGE_SIZE;
}

/* ---- the pattern ---- */

/* A bijection on 64 bits (MurmurHash3's finalizer): distinct keys give
 * distinct first values, so two generations of a page never share one. */
static inline uint64_t mix64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdUL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53UL;
    k ^= k >> 33;
    return k;
}

/* Qword q of a page holds first + q * QSTEP; generation 0 is all zeros.
 * Key bits: generation 0-35, page frame 36-55 (below 4 GiB), CPU 58-62. */
static inline uint64_t first_value(uint64_t cpu, uint64_t gpa, uint64_t gen)
{
    if (gen == 0)
        return 0;
    return mix64(gen | ((gpa >> 12) << 36) | (cpu << 58));
}

static void fill_page(uint64_t gpa, uint64_t v)
{
    volatile uint64_t *p = (volatile uint64_t *)gpa;
    for (uint64_t q = 0; q < QWORDS; q++, v += QSTEP)
        p[q] = v;
}

static void record(struct cpu_state *st, uint64_t addr, uint64_t expected, uint64_t found)
{
    if (st->corrupt)
        return;
    st->bad_addr = addr;
    st->bad_expected = expected;
    st->bad_found = found;
    st->corrupt = 1;
}

static void verify_page(struct cpu_state *st, uint64_t cpu, uint64_t gpa, uint64_t gen)
{
    const volatile uint64_t *p = (const volatile uint64_t *)gpa;
    uint64_t v = first_value(cpu, gpa, gen);
    uint64_t step = gen ? QSTEP : 0;
    for (uint64_t q = 0; q < QWORDS; q++, v += step) {
        uint64_t x = p[q];
        if (x != v) {
            record(st, gpa + q * 8, v, x);
            return;
        }
    }
}

/* ---- output ---- */

static void heartbeat(uint64_t cpu, const struct cpu_state *st, uint64_t seq, uint64_t ms,
                      uint64_t writes, uint64_t verified)
{
    struct line l = { .len = 0 };
    line_str(&l, "HB cpu=");
    line_dec(&l, cpu);
    line_str(&l, " seq=");
    line_dec(&l, seq);
    line_str(&l, " ms=");
    line_dec(&l, ms);
    line_str(&l, " writes=");
    line_dec(&l, writes);
    line_str(&l, " verified=");
    line_dec(&l, verified);
    if (!st->corrupt) {
        line_str(&l, " OK\n");
    } else {
        line_str(&l, " CORRUPT page=0x");
        line_hex(&l, st->bad_addr & ~(PAGE_SIZE - 1), 0);
        line_str(&l, " qword=");
        line_dec(&l, (st->bad_addr & (PAGE_SIZE - 1)) / 8);
        line_str(&l, " expected=0x");
        line_hex(&l, st->bad_expected, 16);
        line_str(&l, " found=0x");
        line_hex(&l, st->bad_found, 16);
        line_str(&l, "\n");
    }
    line_emit(&l);
}

static void banner(const struct boot_info *bi)
{
    struct line l = { .len = 0 };
    line_str(&l, "FERRY-SELFCHECK version=1 boot=");
    line_dec(&l, cfg.boot);
    line_str(&l, " cpus=");
    line_dec(&l, cfg.cpus);
    line_str(&l, " ram_mib=");
    line_dec(&l, bi->ram_bytes >> 20);
    line_str(&l, " owned_pages=");
    line_dec(&l, cfg.owned_total);
    line_str(&l, " fill=");
    line_dec(&l, cfg.fill);
    line_str(&l, " rate=");
    if (cfg.rate_max)
        line_str(&l, "max");
    else
        line_dec(&l, cfg.rate);
    line_str(&l, " hb=");
    line_dec(&l, cfg.hb);
    line_str(&l, "\n");
    line_emit(&l);
}

/* The CPU the guest was given, as CPUID tells it (the engine's CPU model decides): one
 * line of the feature registers, leaf.subleaf:register=hex. */
static void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

static void cpuid_line(void)
{
    static const struct { uint32_t leaf, sub; int reg; const char *name; } regs[] = {
        {1, 0, 3, " 1.edx="}, {1, 0, 2, " 1.ecx="}, {7, 0, 1, " 7.ebx="}, {7, 0, 2, " 7.ecx="},
        {7, 0, 3, " 7.edx="}, {0xd, 1, 0, " d.1.eax="}, {0x80000001, 0, 2, " 80000001.ecx="},
        {0x80000001, 0, 3, " 80000001.edx="},
    };
    struct line l = { .len = 0 };
    uint32_t r[4];
    line_str(&l, "CPUID");
    for (unsigned i = 0; i < sizeof(regs) / sizeof(regs[0]); i++) {
        cpuid(regs[i].leaf, regs[i].sub, r);
        line_str(&l, regs[i].name);
        line_hex(&l, r[regs[i].reg], 8);
    }
    line_str(&l, "\n");
    line_emit(&l);
}

/* ---- control ---- */

static uint8_t cmos_read(uint8_t index)
{
    outb(0x70, index);
    return inb(0x71);
}

static void cmos_write(uint8_t index, uint8_t value)
{
    outb(0x70, index);
    outb(0x71, value);
}

static void __attribute__((noreturn)) stop_here(void)
{
    for (;;)
        cpu_relax();
}

static void setup(struct boot_info *bi)
{
    if (bi->magic != BOOT_INFO_MAGIC) {
        struct line l = { .len = 0 };
        line_str(&l, "FERRY-SELFCHECK error: no Ferry boot-info block\n");
        line_emit(&l);
        stop_here();
    }
    cfg.fill = DEFAULT_FILL;
    cfg.hb = DEFAULT_HB;
    cfg.cpus = bi->cpu_count > MAX_CPUS ? MAX_CPUS : bi->cpu_count;
    if (cfg.cpus == 0)
        cfg.cpus = 1;
    if (bi->cmdline_addr && bi->cmdline_addr < MAP_LIMIT)
        parse_cmdline((const char *)bi->cmdline_addr, bi->cmdline_len);

    uint8_t boot = cmos_read(CMOS_BOOT);
    if (boot != 0xff)
        boot++;
    cmos_write(CMOS_BOOT, boot);
    cfg.boot = boot;

    cfg.owned_total = find_usable(bi) * cfg.fill / 100;
    banner(bi);
    cpuid_line();
}

#define PM1_STS 0x600
#define PWRBTN_STS 0x0100

/* A pressed ACPI power button (ferry stop) powers the guest off, as an OS would. */
static void check_power_button(void)
{
    if (!(inw(PM1_STS) & PWRBTN_STS))
        return;
    console_lock();
    serial_write("FERRY-SELFCHECK power button: powering off\n", 43);
    console_unlock();
    outw(0x604, 0x3400);                    /* SLP_TYP=5 | SLP_EN */
}

/* vCPU 0's actions after its heartbeat number seq. */
static void after_heartbeat(uint64_t seq)
{
    check_power_button();
    if (seq == 1 && cfg.crash)
        crash_request = cfg.crash;
    if (cfg.poweroff_after && seq == cfg.poweroff_after)
        outw(0x604, 0x3400);                /* SLP_TYP=5 | SLP_EN */
    if (cfg.reboot_after && seq == cfg.reboot_after && cfg.boot == 1)
        outb(0x64, 0xfe);                   /* i8042 pulse reset line */
}

static void __attribute__((noreturn)) run(uint64_t cpu)
{
    struct cpu_state *st = &states[cpu];
    const struct percpu *pc = percpu_of(cpu);
    const uint64_t first = cfg.owned_total * cpu / cfg.cpus;
    const uint64_t pages = cfg.owned_total * (cpu + 1) / cfg.cpus - first;
    const uint64_t rate = cfg.rate, rate_max = cfg.rate_max, hb = cfg.hb;
    /* Write n goes to page n % pages with generation n / pages + 1; wj and wg
     * are those two for the next write, kept incrementally. */
    uint64_t n = 0, wj = 0, wg = 0, vj = 0, verified = 0, seq = 0;
    uint64_t start = clock_ticks, last = start;
    uint64_t allowed = (rate_max || rate) ? 0 : pages;
    uint64_t next_hb = start * MS_PER_TICK + hb;
    uint64_t local_seen = pc->local_ticks;

    for (;;) {
        uint64_t now = clock_ticks;
        if (now != last) {
            /* Only vCPU 0's interrupt handler changes the clock, by +1: going
             * back means this memory was not restored consistently. */
            if (now < last)
                record(st, (uint64_t)&clock_ticks, last, now);
            last = now;
            if (rate && now >= start)
                allowed = rate * (now - start) / TICK_HZ;
        }

        if (pages && (rate_max || n < allowed)) {
            uint64_t gpa = gpa_of(first + wj);
            /* Read the page before overwriting it, so a lost write to it is
             * caught even if the sweep below has not reached it yet. */
            verify_page(st, cpu, gpa, wg);
            fill_page(gpa, first_value(cpu, gpa, wg + 1));
            /* The memory copy of n must still be the one stored last time. */
            uint64_t mirror = st->writes;
            if (mirror != n)
                record(st, (uint64_t)&st->writes, n, mirror);
            n++;
            st->writes = n;
            if (++wj == pages) {
                wj = 0;
                wg++;
            }
            verified++;
        }

        if (pages) {
            verify_page(st, cpu, gpa_of(first + vj), wg + (vj < wj ? 1 : 0));
            if (++vj == pages)
                vj = 0;
            verified++;
        }
        st->verified = verified;

        /* Other vCPUs also need their own LAPIC timer to have fired since the
         * last heartbeat: if a restore loses it, their heartbeats stop. */
        uint64_t ms = now * MS_PER_TICK;
        if (ms >= next_hb && (cpu == 0 || pc->local_ticks != local_seen)) {
            local_seen = pc->local_ticks;
            seq++;
            st->seq = seq;
            heartbeat(cpu, st, seq, ms, n, verified);
            next_hb += hb;
            if (next_hb <= ms)
                next_hb = ms + hb;
            if (cpu == 0)
                after_heartbeat(seq);
        }
    }
}

void user_main(struct boot_info *bi, uint64_t cpu)
{
    if (cpu == 0) {
        setup(bi);
        cfg.ready = 1;
    } else {
        while (!cfg.ready)
            cpu_relax();
    }
    if (cpu >= cfg.cpus)
        stop_here();
    run(cpu);
}
