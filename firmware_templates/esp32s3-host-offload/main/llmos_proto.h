/* llmos host-offload protocol: framing, CRC and a stop-and-wait link (ACK per frame).
 *
 * Frame (little-endian):
 *   0xA5 0x5A | type u8 | flags u8 | seq u16 | len u16 | hcrc u8 | payload[len] | crc32 u32
 * hcrc is CRC-8 (poly 0x07) over type..len so a corrupted length is rejected at once;
 * crc32 (IEEE, as zlib) covers type..payload. The same file is compiled by ESP-IDF for the
 * chip and by the host's gcc for tests; keep it plain C99 without platform headers.
 */
#ifndef LLMOS_PROTO_H
#define LLMOS_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define LLMOS_MAGIC0 0xA5
#define LLMOS_MAGIC1 0x5A
#define LLMOS_HEADER_LEN 9
#define LLMOS_OVERHEAD 13
#define LLMOS_MAX_PAYLOAD 1024
#define LLMOS_MAX_FRAME (LLMOS_MAX_PAYLOAD + LLMOS_OVERHEAD)
#define LLMOS_PROTO_VERSION 1

enum llmos_type {
    LLMOS_T_REQUEST = 1,
    LLMOS_T_CHUNK = 2,
    LLMOS_T_END = 3,
    LLMOS_T_ERROR = 4,
    LLMOS_T_PING = 5,
    LLMOS_T_PONG = 6,
    LLMOS_T_VERSION = 7,
    LLMOS_T_ACK = 8,
};

#define LLMOS_F_SYN 0x01 /* first frame of a sender session: the receiver adopts its seq */

typedef struct {
    uint8_t type;
    uint8_t flags;
    uint16_t seq;
    uint16_t len;
    uint8_t payload[LLMOS_MAX_PAYLOAD + 1]; /* +1 keeps room for a NUL terminator */
} llmos_frame_t;

typedef struct {
    uint32_t frames;
    uint32_t crc_errors;    /* payload CRC32 mismatch */
    uint32_t header_errors; /* header CRC-8 mismatch */
    uint32_t oversize;      /* length field above LLMOS_MAX_PAYLOAD */
    uint32_t garbage_bytes; /* bytes skipped while looking for the magic */
    uint32_t flushed;       /* partial frames dropped after an idle gap */
} llmos_dec_stats_t;

typedef struct {
    uint8_t buf[LLMOS_MAX_FRAME];
    size_t n;
    llmos_dec_stats_t stats;
} llmos_decoder_t;

uint32_t llmos_crc32(uint32_t crc, const uint8_t *data, size_t n);
uint8_t llmos_crc8(const uint8_t *data, size_t n);

/* Encode into out (LLMOS_MAX_FRAME bytes). Returns the frame size, or 0 if len is too large. */
size_t llmos_encode(uint8_t type, uint8_t flags, uint16_t seq, const uint8_t *payload, size_t len,
                    uint8_t *out);

void llmos_dec_init(llmos_decoder_t *d);
/* Feed one byte; returns 1 and fills *out when a valid frame completes. */
int llmos_dec_feed(llmos_decoder_t *d, uint8_t byte, llmos_frame_t *out);
/* Drop a partial frame after an idle gap, rescanning its bytes; returns 1 if a frame came out. */
int llmos_dec_flush(llmos_decoder_t *d, llmos_frame_t *out);

/* ---- link: go-back-N window, cumulative ACKs, retries, SYN for a fresh session ---- */

typedef struct {
    /* read up to n bytes, waiting at most timeout_ms; >0 bytes, 0 timeout, <0 error */
    int (*read)(void *ctx, uint8_t *buf, size_t n, uint32_t timeout_ms);
    int (*write)(void *ctx, const uint8_t *buf, size_t n); /* 0 ok, <0 error */
    uint32_t (*now_ms)(void *ctx);
    void *ctx;
} llmos_io_t;

#define LLMOS_RXQ 4   /* received frames waiting for the application */
#define LLMOS_TXWIN 4 /* frames in flight before send() blocks (flow control) */

typedef struct {
    uint32_t sent;
    uint32_t retries;
    uint32_t delivered;
    uint32_t duplicates;
    uint32_t out_of_order;
    uint32_t queue_full;
} llmos_link_stats_t;

typedef struct {
    uint8_t data[LLMOS_MAX_FRAME];
    uint16_t len;
    uint16_t seq;
} llmos_txslot_t;

typedef struct {
    llmos_io_t io;
    llmos_decoder_t dec;
    uint32_t ack_timeout_ms;
    uint32_t max_retries;
    uint32_t idle_flush_ms; /* drop a partial frame after this long without a byte */
    uint32_t last_rx_ms;
    /* sender */
    uint16_t tx_next;
    int tx_synced;
    llmos_txslot_t txwin[LLMOS_TXWIN];
    int tx_head, tx_count;
    uint32_t tx_sent_ms;
    uint32_t attempts;
    /* receiver */
    uint16_t rx_expected;
    int rx_synced;
    llmos_frame_t rxq[LLMOS_RXQ];
    int rxq_head, rxq_len;
    llmos_frame_t scratch;
    llmos_link_stats_t stats;
} llmos_link_t;

/* ETIMEOUT: nothing arrived in time; ENOACK: the peer stopped ACKing (after all retries) */
enum { LLMOS_OK = 0, LLMOS_ETIMEOUT = -1, LLMOS_EIO = -2, LLMOS_ETOOBIG = -3, LLMOS_ENOACK = -4 };

void llmos_link_init(llmos_link_t *l, llmos_io_t io, uint16_t initial_seq);
/* Queue one frame and put it on the wire; blocks while the window is full. */
int llmos_link_send(llmos_link_t *l, uint8_t type, const uint8_t *payload, size_t len);
/* Wait until every sent frame is ACKed. */
int llmos_link_flush(llmos_link_t *l);
/* Wait up to timeout_ms for the next delivered (in order, deduplicated) frame. */
int llmos_link_recv(llmos_link_t *l, llmos_frame_t *out, uint32_t timeout_ms);

#endif
