/* Fuzz driver for the C decoder (built with gcc, ASan/UBSan when available).
 *
 *   proto_fuzz SEED ITERATIONS
 * Each round: random bytes, then clean frames with garbage between, then frames with one
 * corruption (bit flip, dropped byte, truncation). Checks: no crash or sanitizer report; a
 * corrupted frame is never delivered; every clean frame comes out once, in order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmos_proto.h"

static unsigned long long rng_state;

static unsigned rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (unsigned)(rng_state >> 11);
}

static llmos_decoder_t dec;
static llmos_frame_t out;

typedef struct {
    uint16_t seq;
    uint16_t len;
    uint32_t crc;
} want_t;

static int collect(const uint8_t *buf, size_t n, want_t *got, int max)
{
    int k = 0;
    for (size_t i = 0; i < n; i++) {
        if (llmos_dec_feed(&dec, buf[i], &out) && k < max) {
            got[k].seq = out.seq;
            got[k].len = out.len;
            got[k].crc = llmos_crc32(0, out.payload, out.len);
            k++;
        }
    }
    while (dec.n) {
        if (llmos_dec_flush(&dec, &out) && k < max) {
            got[k].seq = out.seq;
            got[k].len = out.len;
            got[k].crc = llmos_crc32(0, out.payload, out.len);
            k++;
        }
    }
    return k;
}

static size_t make_frame(uint8_t *dst, uint16_t seq, want_t *w)
{
    uint8_t payload[LLMOS_MAX_PAYLOAD];
    size_t len = rnd() % 3 == 0 ? rnd() % (LLMOS_MAX_PAYLOAD + 1) : rnd() % 64;
    for (size_t i = 0; i < len; i++) {
        payload[i] = (uint8_t)rnd();
    }
    w->seq = seq;
    w->len = (uint16_t)len;
    w->crc = llmos_crc32(0, payload, len);
    return llmos_encode((uint8_t)(1 + rnd() % 8), 0, seq, payload, len, dst);
}

static size_t corrupt(uint8_t *f, size_t n)
{
    switch (rnd() % 3) {
    case 0: /* bit flip */
        f[rnd() % n] ^= (uint8_t)(1u << (rnd() % 8));
        return n;
    case 1: { /* dropped byte: not a magic byte nor in the CRC, where the next
                 stream bytes could stand in for it and rebuild the intact frame */
        size_t at = 2 + rnd() % (n - 6);
        memmove(f + at, f + at + 1, n - at - 1);
        return n - 1;
    }
    default: /* truncated, at least into the CRC */
        return rnd() % (n - 4);
    }
}

static int round_trip(int round)
{
    static uint8_t stream[64 * LLMOS_MAX_FRAME];
    want_t wants[32], got[64];
    int nw = 0;
    size_t n = 0;
    for (int i = 0; i < 16; i++) {
        size_t g = rnd() % 40;
        for (size_t j = 0; j < g; j++) {
            stream[n++] = (uint8_t)(rnd() % 4 == 0 ? LLMOS_MAGIC0 : rnd());
        }
        uint8_t frame[LLMOS_MAX_FRAME];
        want_t w;
        size_t fl = make_frame(frame, (uint16_t)(round * 16 + i), &w);
        if (rnd() % 3 == 0) {
            fl = corrupt(frame, fl); /* must never come out */
        } else {
            wants[nw++] = w;
        }
        memcpy(stream + n, frame, fl);
        n += fl;
    }
    int k = collect(stream, n, got, 64);
    if (k != nw) {
        fprintf(stderr, "round %d: expected %d frames, got %d\n", round, nw, k);
        return 1;
    }
    for (int i = 0; i < k; i++) {
        if (got[i].seq != wants[i].seq || got[i].len != wants[i].len || got[i].crc != wants[i].crc) {
            fprintf(stderr, "round %d: frame %d differs\n", round, i);
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    rng_state = argc > 1 ? strtoull(argv[1], NULL, 10) * 2654435761ull + 1 : 1;
    long iters = argc > 2 ? strtol(argv[2], NULL, 10) : 1000;
    static uint8_t junk[8192];
    want_t got[512];
    for (long r = 0; r < iters; r++) {
        llmos_dec_init(&dec);
        size_t n = rnd() % sizeof(junk);
        for (size_t i = 0; i < n; i++) {
            junk[i] = (uint8_t)(rnd() % 8 == 0 ? (i & 1 ? LLMOS_MAGIC1 : LLMOS_MAGIC0) : rnd());
        }
        collect(junk, n, got, 512); /* random input: must not crash; frames are allowed */
        llmos_dec_init(&dec);
        if (round_trip((int)r)) {
            return 1;
        }
    }
    printf("ok %ld rounds\n", iters);
    return 0;
}
