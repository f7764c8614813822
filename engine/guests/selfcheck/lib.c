/* Console output and the few routines a freestanding C compiler may call.
 * Everything here runs in either ring: COM1 is in ring 3's I/O bitmap. */

#include "selfcheck.h"

#define COM1        0x3f8
#define COM1_LSR    (COM1 + 5)
#define LSR_THRE    0x20

static volatile uint32_t console_lock_word;

void console_lock(void)
{
    for (;;) {
        uint32_t old = 1;
        __asm__ volatile("xchgl %0, %1" : "+r"(old), "+m"(console_lock_word) : : "memory");
        if (old == 0)
            return;
        while (console_lock_word)
            cpu_relax();
    }
}

void console_unlock(void)
{
    __asm__ volatile("" : : : "memory");
    console_lock_word = 0;
}

void serial_write(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        while (!(inb(COM1_LSR) & LSR_THRE))
            cpu_relax();
        outb(COM1, (uint8_t)s[i]);
    }
}

void line_emit(struct line *l)
{
    console_lock();
    serial_write(l->buf, l->len);
    console_unlock();
}

void line_str(struct line *l, const char *s)
{
    while (*s && l->len < sizeof(l->buf))
        l->buf[l->len++] = *s++;
}

void line_dec(struct line *l, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n && l->len < sizeof(l->buf))
        l->buf[l->len++] = tmp[--n];
}

/* digits = 0: as many as needed; otherwise zero-padded to that width. */
void line_hex(struct line *l, uint64_t v, int digits)
{
    char tmp[16];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v && n < 16);
    while (n < digits && n < 16)
        tmp[n++] = '0';
    while (n && l->len < sizeof(l->buf))
        l->buf[l->len++] = tmp[--n];
}

void *memset(void *d, int c, size_t n)
{
    uint8_t *p = d;
    while (n--)
        *p++ = (uint8_t)c;
    return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
    uint8_t *p = d;
    const uint8_t *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}

void *memmove(void *d, const void *s, size_t n)
{
    uint8_t *p = d;
    const uint8_t *q = s;
    if (p < q) {
        while (n--)
            *p++ = *q++;
    } else {
        while (n--)
            p[n] = q[n];
    }
    return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const uint8_t *p = a, *q = b;
    for (; n; n--, p++, q++)
        if (*p != *q)
            return *p - *q;
    return 0;
}
