/* HMAC-SHA256 (OpenSSL), random bytes (getrandom), CRC32C (SSE4.2 with a table fallback). */
#define _GNU_SOURCE
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/random.h>

#include "CShims.h"

int lg_hmac_sha256(const void *key, size_t key_len, const void *data, size_t data_len, uint8_t out[32]) {
    unsigned int len = 32;
    return HMAC(EVP_sha256(), key, (int)key_len, data, data_len, out, &len) ? 0 : -EINVAL;
}

int lg_random_bytes(void *buf, size_t len) {
    size_t done = 0;
    while (done < len) {
        ssize_t r = getrandom((char *)buf + done, len - done, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        done += (size_t)r;
    }
    return 0;
}

static uint32_t crc_table[8][256];
static int crc_table_ready;

static void crc_table_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++) crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
    __atomic_store_n(&crc_table_ready, 1, __ATOMIC_RELEASE);
}

/* One stream: the raw register (no inversion) after feeding len bytes. */
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw1(uint32_t crc, const uint8_t *p, size_t len) {
    uint64_t c = crc;
    while (len >= 8) {
        uint64_t v;
        __builtin_memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        len -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (len--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32;
}

/*
 * Three streams. The crc32 instruction has a latency of three cycles and a throughput of one, so one
 * stream uses a third of it. A block of 3*STRIDE bytes is fed as three independent streams over its
 * thirds (the 2nd and 3rd from a zero register), then joined: the raw CRC is linear, so
 * crc(x, A||B) = zeros(crc(x, A), |B|) ^ crc(0, B), where zeros(v, n) is the register after n zero
 * bytes from v, itself linear in v and tabulated per byte of v for n = STRIDE.
 */
#define CRC_STRIDE 1360  /* 3 * 1360 = 4080: a 4 KiB payload goes through the three streams */
static uint32_t crc_shift[4][256];
static int crc_shift_ready;

__attribute__((target("sse4.2"))) static void crc_shift_init(void) {
    static const uint8_t zeros[CRC_STRIDE];
    uint32_t basis[32];
    for (int i = 0; i < 32; i++) basis[i] = crc32c_hw1(1u << i, zeros, CRC_STRIDE);
    for (int k = 0; k < 4; k++)
        for (uint32_t b = 0; b < 256; b++) {
            uint32_t v = 0;
            for (int i = 0; i < 8; i++)
                if (b & (1u << i)) v ^= basis[8 * k + i];
            crc_shift[k][b] = v;
        }
    __atomic_store_n(&crc_shift_ready, 1, __ATOMIC_RELEASE);
}

static inline uint32_t crc_zeros(uint32_t v) {
    return crc_shift[0][v & 0xff] ^ crc_shift[1][(v >> 8) & 0xff] ^ crc_shift[2][(v >> 16) & 0xff] ^ crc_shift[3][v >> 24];
}

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p, size_t len) {
    if (len >= 3 * CRC_STRIDE) {
        if (!__atomic_load_n(&crc_shift_ready, __ATOMIC_ACQUIRE)) crc_shift_init();
        while (len >= 3 * CRC_STRIDE) {
            uint64_t a = crc, b = 0, c = 0;
            for (size_t i = 0; i < CRC_STRIDE; i += 8) {
                uint64_t va, vb, vc;
                __builtin_memcpy(&va, p + i, 8);
                __builtin_memcpy(&vb, p + CRC_STRIDE + i, 8);
                __builtin_memcpy(&vc, p + 2 * CRC_STRIDE + i, 8);
                a = __builtin_ia32_crc32di(a, va);
                b = __builtin_ia32_crc32di(b, vb);
                c = __builtin_ia32_crc32di(c, vc);
            }
            crc = crc_zeros(crc_zeros((uint32_t)a) ^ (uint32_t)b) ^ (uint32_t)c;
            p += 3 * CRC_STRIDE;
            len -= 3 * CRC_STRIDE;
        }
    }
    return crc32c_hw1(crc, p, len);
}

static uint32_t crc32c_sw(uint32_t crc, const uint8_t *p, size_t len) {
    if (!__atomic_load_n(&crc_table_ready, __ATOMIC_ACQUIRE)) crc_table_init();
    while (len--) crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

/* CRC32C (Castagnoli) as in iSCSI/ext4: lg_crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t lg_crc32c(uint32_t crc, const void *data, size_t len) {
    static int have_sse42 = -1;
    if (have_sse42 < 0) have_sse42 = __builtin_cpu_supports("sse4.2") ? 1 : 0;
    uint32_t c = ~crc;
    c = have_sse42 ? crc32c_hw(c, data, len) : crc32c_sw(c, data, len);
    return ~c;
}
