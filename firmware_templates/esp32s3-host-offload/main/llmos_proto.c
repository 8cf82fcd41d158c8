/* llmos host-offload protocol: see llmos_proto.h for the frame layout. Plain C99. */
#include "llmos_proto.h"

#include <string.h>

uint32_t llmos_crc32(uint32_t crc, const uint8_t *data, size_t n)
{
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= data[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
        }
    }
    return ~crc;
}

uint8_t llmos_crc8(const uint8_t *data, size_t n)
{
    uint8_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= data[i];
        for (int k = 0; k < 8; k++) {
            crc = (uint8_t)((crc & 0x80) ? (crc << 1) ^ 0x07 : (crc << 1));
        }
    }
    return crc;
}

static void put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

size_t llmos_encode(uint8_t type, uint8_t flags, uint16_t seq, const uint8_t *payload, size_t len,
                    uint8_t *out)
{
    if (len > LLMOS_MAX_PAYLOAD) {
        return 0;
    }
    out[0] = LLMOS_MAGIC0;
    out[1] = LLMOS_MAGIC1;
    out[2] = type;
    out[3] = flags;
    put_u16(out + 4, seq);
    put_u16(out + 6, (uint16_t)len);
    out[8] = llmos_crc8(out + 2, 6);
    if (len) {
        memcpy(out + LLMOS_HEADER_LEN, payload, len);
    }
    uint32_t crc = llmos_crc32(0, out + 2, LLMOS_HEADER_LEN - 2 + len);
    uint8_t *t = out + LLMOS_HEADER_LEN + len;
    t[0] = (uint8_t)crc;
    t[1] = (uint8_t)(crc >> 8);
    t[2] = (uint8_t)(crc >> 16);
    t[3] = (uint8_t)(crc >> 24);
    return LLMOS_OVERHEAD + len;
}

void llmos_dec_init(llmos_decoder_t *d) { memset(d, 0, sizeof(*d)); }

static void drop(llmos_decoder_t *d, size_t k)
{
    memmove(d->buf, d->buf + k, d->n - k);
    d->n -= k;
}

/* Parse what is buffered: resync byte by byte on any mismatch, never trusting a bad header. */
static int dec_parse(llmos_decoder_t *d, llmos_frame_t *out)
{
    for (;;) {
        if (d->n == 0) {
            return 0;
        }
        if (d->buf[0] != LLMOS_MAGIC0 || (d->n >= 2 && d->buf[1] != LLMOS_MAGIC1)) {
            d->stats.garbage_bytes++;
            drop(d, 1);
            continue;
        }
        if (d->n < LLMOS_HEADER_LEN) {
            return 0;
        }
        if (llmos_crc8(d->buf + 2, 6) != d->buf[8]) {
            d->stats.header_errors++;
            drop(d, 1);
            continue;
        }
        uint16_t len = get_u16(d->buf + 6);
        if (len > LLMOS_MAX_PAYLOAD) {
            d->stats.oversize++;
            drop(d, 1);
            continue;
        }
        size_t total = (size_t)LLMOS_OVERHEAD + len;
        if (d->n < total) {
            return 0;
        }
        const uint8_t *t = d->buf + LLMOS_HEADER_LEN + len;
        uint32_t want = (uint32_t)t[0] | ((uint32_t)t[1] << 8) | ((uint32_t)t[2] << 16) | ((uint32_t)t[3] << 24);
        if (llmos_crc32(0, d->buf + 2, LLMOS_HEADER_LEN - 2 + len) != want) {
            d->stats.crc_errors++;
            drop(d, 1);
            continue;
        }
        out->type = d->buf[2];
        out->flags = d->buf[3];
        out->seq = get_u16(d->buf + 4);
        out->len = len;
        memcpy(out->payload, d->buf + LLMOS_HEADER_LEN, len);
        out->payload[len] = 0;
        d->stats.frames++;
        drop(d, total);
        return 1;
    }
}

int llmos_dec_feed(llmos_decoder_t *d, uint8_t byte, llmos_frame_t *out)
{
    if (d->n == sizeof(d->buf)) { /* cannot happen: a full buffer always parses */
        drop(d, 1);
    }
    d->buf[d->n++] = byte;
    return dec_parse(d, out);
}

int llmos_dec_flush(llmos_decoder_t *d, llmos_frame_t *out)
{
    if (d->n == 0) {
        return 0;
    }
    if (dec_parse(d, out)) { /* a complete frame still waiting: never drop it */
        return 1;
    }
    if (d->n == 0) {
        return 0;
    }
    d->stats.flushed++;
    drop(d, 1);
    return dec_parse(d, out);
}

static int dec_poll(llmos_decoder_t *d, llmos_frame_t *out) { return dec_parse(d, out); }

/* ------------------------------------------------------------------ link */

void llmos_link_init(llmos_link_t *l, llmos_io_t io, uint16_t initial_seq)
{
    memset(l, 0, sizeof(*l));
    l->io = io;
    l->ack_timeout_ms = 200;
    l->max_retries = 8;
    l->idle_flush_ms = 100;
    l->tx_next = initial_seq;
    llmos_dec_init(&l->dec);
}

static int16_t seq_diff(uint16_t a, uint16_t b) { return (int16_t)(uint16_t)(a - b); }

static int send_ack(llmos_link_t *l, uint16_t seq)
{
    uint8_t buf[LLMOS_OVERHEAD];
    size_t n = llmos_encode(LLMOS_T_ACK, 0, seq, NULL, 0, buf);
    return l->io.write(l->io.ctx, buf, n);
}

/* A data frame arrived: deliver it once, in order; ACK it unless the queue is full. */
static int on_data(llmos_link_t *l, const llmos_frame_t *f)
{
    uint16_t last = (uint16_t)(l->rx_expected - 1);
    int16_t d = seq_diff(f->seq, l->rx_expected);
    if ((f->flags & LLMOS_F_SYN) && !(l->rx_synced && f->seq == last)) {
        d = 0; /* a new session from the peer */
    } else if (!l->rx_synced) {
        d = 0; /* we restarted while the peer kept its session */
    }
    if (d != 0) {
        if (d < 0) {
            l->stats.duplicates++;
        } else {
            l->stats.out_of_order++; /* an earlier frame was lost: wait for go-back-N */
        }
        return l->rx_synced ? send_ack(l, last) : 0;
    }
    if (l->rxq_len == LLMOS_RXQ) {
        l->stats.queue_full++; /* no ACK: the peer resends later (flow control) */
        return 0;
    }
    int slot = (l->rxq_head + l->rxq_len) % LLMOS_RXQ;
    memcpy(&l->rxq[slot], f, sizeof(*f));
    l->rxq_len++;
    l->rx_expected = (uint16_t)(f->seq + 1);
    l->rx_synced = 1;
    l->stats.delivered++;
    return send_ack(l, f->seq);
}

static void on_ack(llmos_link_t *l, uint16_t seq)
{
    if (!l->tx_count) {
        return;
    }
    int n = seq_diff(seq, l->txwin[l->tx_head].seq) + 1; /* cumulative: everything up to seq */
    if (n > 0 && n <= l->tx_count) {
        l->tx_head = (l->tx_head + n) % LLMOS_TXWIN;
        l->tx_count -= n;
        l->tx_synced = 1;
        l->attempts = 0;
        l->tx_sent_ms = l->io.now_ms(l->io.ctx);
    }
}

static int transmit_window(llmos_link_t *l)
{
    for (int i = 0; i < l->tx_count; i++) {
        llmos_txslot_t *s = &l->txwin[(l->tx_head + i) % LLMOS_TXWIN];
        if (l->io.write(l->io.ctx, s->data, s->len) < 0) {
            return LLMOS_EIO;
        }
        l->stats.sent++;
    }
    l->tx_sent_ms = l->io.now_ms(l->io.ctx);
    return LLMOS_OK;
}

static int check_timeout(llmos_link_t *l)
{
    if (!l->tx_count || (uint32_t)(l->io.now_ms(l->io.ctx) - l->tx_sent_ms) < l->ack_timeout_ms) {
        return LLMOS_OK;
    }
    if (l->attempts >= l->max_retries) {
        return LLMOS_ENOACK;
    }
    l->attempts++;
    l->stats.retries++;
    return transmit_window(l); /* go-back-N: resend the whole window in order */
}

/* Read once (at most wait_ms), handle every frame, then resend on ACK timeout. */
static int pump(llmos_link_t *l, uint32_t wait_ms)
{
    uint8_t buf[256];
    int r = l->io.read(l->io.ctx, buf, sizeof(buf), wait_ms);
    if (r < 0) {
        return LLMOS_EIO;
    }
    uint32_t now = l->io.now_ms(l->io.ctx);
    int idle = 0;
    if (r > 0) {
        l->last_rx_ms = now;
    } else if (l->dec.n && (uint32_t)(now - l->last_rx_ms) >= l->idle_flush_ms) {
        idle = 1; /* a partial frame and silence: its length was probably corrupted */
    }
    for (int i = 0; i <= r; i++) {
        int got = 0;
        if (i < r) {
            got = llmos_dec_feed(&l->dec, buf[i], &l->scratch);
        } else if (idle) {
            got = llmos_dec_flush(&l->dec, &l->scratch);
        }
        while (got) {
            if (l->scratch.type == LLMOS_T_ACK) {
                on_ack(l, l->scratch.seq);
            } else if (on_data(l, &l->scratch) < 0) {
                return LLMOS_EIO;
            }
            got = dec_poll(&l->dec, &l->scratch);
        }
    }
    return check_timeout(l);
}

int llmos_link_send(llmos_link_t *l, uint8_t type, const uint8_t *payload, size_t len)
{
    if (len > LLMOS_MAX_PAYLOAD) {
        return LLMOS_ETOOBIG;
    }
    while (l->tx_count >= (l->tx_synced ? LLMOS_TXWIN : 1)) {
        int err = pump(l, 10);
        if (err) {
            return err;
        }
    }
    uint8_t flags = (l->tx_synced || l->tx_count) ? 0 : LLMOS_F_SYN;
    llmos_txslot_t *s = &l->txwin[(l->tx_head + l->tx_count) % LLMOS_TXWIN];
    s->seq = l->tx_next++;
    s->len = (uint16_t)llmos_encode(type, flags, s->seq, payload, len, s->data);
    if (l->tx_count == 0) {
        l->attempts = 0;
        l->tx_sent_ms = l->io.now_ms(l->io.ctx);
    }
    l->tx_count++;
    if (l->io.write(l->io.ctx, s->data, s->len) < 0) {
        return LLMOS_EIO;
    }
    l->stats.sent++;
    return LLMOS_OK;
}

int llmos_link_flush(llmos_link_t *l)
{
    while (l->tx_count) {
        int err = pump(l, 10);
        if (err) {
            return err;
        }
    }
    return LLMOS_OK;
}

int llmos_link_recv(llmos_link_t *l, llmos_frame_t *out, uint32_t timeout_ms)
{
    uint32_t start = l->io.now_ms(l->io.ctx);
    for (;;) {
        if (l->rxq_len) {
            memcpy(out, &l->rxq[l->rxq_head], sizeof(*out));
            l->rxq_head = (l->rxq_head + 1) % LLMOS_RXQ;
            l->rxq_len--;
            return LLMOS_OK;
        }
        uint32_t spent = l->io.now_ms(l->io.ctx) - start;
        if (spent >= timeout_ms) {
            return LLMOS_ETIMEOUT;
        }
        uint32_t left = timeout_ms - spent;
        int err = pump(l, left > 10 ? 10 : left);
        if (err) {
            return err;
        }
    }
}
