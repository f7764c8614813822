/* The host's own memory write rates, for the guest's to be compared with.
 *
 *   hostmem memset MIB                 memset of a fresh MIB buffer (first touch, page faults
 *                                      included), then of the same buffer again (warm): bytes/s
 *   hostmem selfcheck PAGES SECONDS    the self-checking guest's ring-3 loop (user.c, run()) over
 *                                      PAGES pages of one CPU: page writes/s once every page has
 *                                      been written once, as the guest is measured
 *
 * Prints one JSON object, each rate per wall-clock second and per second of this process's
 * CPU time (the latter does not depend on how much of a CPU other work left us). The loop
 * is the guest's own: read-verify the page about to be written, fill it with the next
 * generation, verify one more page of the round-robin sweep.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define PAGE 4096UL
#define QWORDS 512
#define QSTEP 0x9e3779b97f4a7c15UL

static double clock_seconds(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double now(void)
{
    return clock_seconds(CLOCK_MONOTONIC);
}

static double cpu(void)
{
    return clock_seconds(CLOCK_PROCESS_CPUTIME_ID);
}

static void *fresh(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    return p;
}

static inline uint64_t mix64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdUL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53UL;
    k ^= k >> 33;
    return k;
}

static inline uint64_t first_value(uint64_t pfn, uint64_t gen)
{
    return gen ? mix64(gen | (pfn << 36)) : 0;
}

static unsigned long mismatches;

static void verify_page(volatile uint64_t *p, uint64_t pfn, uint64_t gen)
{
    uint64_t v = first_value(pfn, gen), step = gen ? QSTEP : 0;
    for (uint64_t q = 0; q < QWORDS; q++, v += step)
        if (p[q] != v) {
            mismatches++;
            return;
        }
}

static void fill_page(volatile uint64_t *p, uint64_t v)
{
    for (uint64_t q = 0; q < QWORDS; q++, v += QSTEP)
        p[q] = v;
}

static int run_memset(size_t mib)
{
    size_t bytes = mib << 20;
    char *buf = fresh(bytes);
    double t0 = now(), c0 = cpu();
    memset(buf, 0x5a, bytes);
    double t1 = now(), c1 = cpu();
    const int rounds = 8;
    for (int r = 0; r < rounds; r++)
        memset(buf, 0x30 + r, bytes);
    double t2 = now(), c2 = cpu();
    printf("{\"fresh_bytes_per_s\": %.0f, \"fresh_bytes_per_cpu_s\": %.0f, "
           "\"warm_bytes_per_s\": %.0f, \"warm_bytes_per_cpu_s\": %.0f, \"bytes\": %zu, \"check\": %d}\n",
           bytes / (t1 - t0), bytes / (c1 - c0), rounds * bytes / (t2 - t1), rounds * bytes / (c2 - c1),
           bytes, buf[bytes / 2]);
    return 0;
}

static int run_selfcheck(uint64_t pages, double seconds)
{
    uint8_t *base = fresh(pages * PAGE);
    uint64_t n = 0, wj = 0, wg = 0, vj = 0, counted_from = 0;
    double started = 0, deadline = 0, cpu_started = 0;
    for (;;) {
        verify_page((volatile uint64_t *)(base + wj * PAGE), wj, wg);
        fill_page((volatile uint64_t *)(base + wj * PAGE), first_value(wj, wg + 1));
        n++;
        if (++wj == pages) {
            wj = 0;
            wg++;
        }
        verify_page((volatile uint64_t *)(base + vj * PAGE), vj, wg + (vj < wj ? 1 : 0));
        if (++vj == pages)
            vj = 0;
        if (wg == 1 && wj == 0 && started == 0) {
            started = now();
            cpu_started = cpu();
            deadline = started + seconds;
            counted_from = n;
        }
        if (started != 0 && (n & 4095) == 0 && now() >= deadline)
            break;
    }
    double elapsed = now() - started, cpu_elapsed = cpu() - cpu_started;
    printf("{\"writes_per_s\": %.0f, \"writes_per_cpu_s\": %.0f, \"pages\": %lu, \"seconds\": %.3f, "
           "\"mismatches\": %lu}\n",
           (n - counted_from) / elapsed, (n - counted_from) / cpu_elapsed, (unsigned long)pages, elapsed,
           mismatches);
    return mismatches != 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "memset") == 0)
        return run_memset(strtoul(argv[2], NULL, 0));
    if (argc == 4 && strcmp(argv[1], "selfcheck") == 0)
        return run_selfcheck(strtoull(argv[2], NULL, 0), atof(argv[3]));
    fprintf(stderr, "usage: hostmem memset MIB | hostmem selfcheck PAGES SECONDS\n");
    return 2;
}
