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

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p, size_t len) {
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
