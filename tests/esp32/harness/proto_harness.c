/* Host test driver for llmos_proto.c: plays the ESP32 side over a real pty.
 *
 *   proto_harness echo DEV [ack_ms=N] [retries=N] [baud=N]   REQUEST -> CHUNK echo; END -> stats
 *   proto_harness sink DEV [...]                              like echo, but REQUESTs are only counted
 *   proto_harness client DEV PROMPT [...]                     ping, version, one prompt; prints chunks
 *   proto_harness device DEV [...]                            answers ping/version; a REQUEST from the
 *                                                             host is a self-test: ask the host that prompt
 *
 * The firmware's own app (main.c) cannot run here (no ESP32 emulator); this mirrors its use of
 * the link API. baud=N paces writes in software like a UART (8N1).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "llmos_proto.h"

typedef struct {
    int fd;
    double byte_s; /* seconds per byte when paced, else 0 */
    double next;
} port_t;

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint32_t now_ms(void *ctx)
{
    (void)ctx;
    return (uint32_t)(unsigned long long)(mono() * 1000.0);
}

static int port_read(void *ctx, uint8_t *buf, size_t n, uint32_t timeout_ms)
{
    port_t *p = ctx;
    struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
    int r = poll(&pfd, 1, (int)timeout_ms);
    if (r < 0) {
        return errno == EINTR ? 0 : -1;
    }
    if (r == 0) {
        return 0;
    }
    if (pfd.revents & (POLLHUP | POLLERR) && !(pfd.revents & POLLIN)) {
        return -1;
    }
    ssize_t got = read(p->fd, buf, n);
    return got < 0 ? (errno == EAGAIN ? 0 : -1) : (int)got;
}

static int write_all(int fd, const uint8_t *buf, size_t n)
{
    while (n) {
        ssize_t w = write(fd, buf, n);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                usleep(200);
                continue;
            }
            return -1;
        }
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

static int port_write(void *ctx, const uint8_t *buf, size_t n)
{
    port_t *p = ctx;
    if (p->byte_s <= 0) {
        return write_all(p->fd, buf, n);
    }
    for (size_t i = 0; i < n; i += 64) {
        size_t k = n - i < 64 ? n - i : 64;
        double t = mono();
        if (p->next > t) {
            usleep((useconds_t)((p->next - t) * 1e6));
        } else {
            p->next = t;
        }
        if (write_all(p->fd, buf + i, k) < 0) {
            return -1;
        }
        p->next += (double)k * p->byte_s;
    }
    return 0;
}

static int open_raw(const char *dev)
{
    int fd = open(dev, O_RDWR | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        return -1;
    }
    struct termios tio;
    if (tcgetattr(fd, &tio) == 0) {
        cfmakeraw(&tio);
        tcsetattr(fd, TCSANOW, &tio);
    }
    return fd;
}

static long opt(int argc, char **argv, int from, const char *key, long dflt)
{
    size_t kl = strlen(key);
    for (int i = from; i < argc; i++) {
        if (strncmp(argv[i], key, kl) == 0 && argv[i][kl] == '=') {
            return strtol(argv[i] + kl + 1, NULL, 10);
        }
    }
    return dflt;
}

static int send_str(llmos_link_t *l, uint8_t type, const char *s)
{
    return llmos_link_send(l, type, (const uint8_t *)s, strlen(s));
}

static int selftest(llmos_link_t *l, const llmos_frame_t *req)
{
    llmos_frame_t f;
    unsigned long chars = 0;
    if (llmos_link_send(l, LLMOS_T_REQUEST, req->payload, req->len) != LLMOS_OK) {
        return LLMOS_EIO;
    }
    for (;;) {
        if (llmos_link_recv(l, &f, 60000) != LLMOS_OK) {
            return send_str(l, LLMOS_T_ERROR, "selftest: no answer from the host");
        }
        if (f.type == LLMOS_T_CHUNK) {
            chars += f.len;
        } else if (f.type == LLMOS_T_END) {
            char buf[96];
            snprintf(buf, sizeof(buf), "{\"selftest\": \"ok\", \"chars\": %lu}", chars);
            return send_str(l, LLMOS_T_END, buf);
        } else if (f.type == LLMOS_T_ERROR) {
            return send_str(l, LLMOS_T_ERROR, "selftest: host reported an error");
        }
    }
}

static int serve(llmos_link_t *l, int echo)
{
    llmos_frame_t f;
    unsigned long requests = 0, bytes = 0;
    uint32_t digest = 0; /* CRC32 chained over request payloads: order, loss and duplicates show */
    for (;;) {
        int r = llmos_link_recv(l, &f, 30000);
        if (r != LLMOS_OK) {
            fprintf(stderr, "harness: recv failed (%d)\n", r);
            return 3;
        }
        if (f.type == LLMOS_T_PING) {
            r = llmos_link_send(l, LLMOS_T_PONG, f.payload, f.len);
        } else if (f.type == LLMOS_T_VERSION) {
            r = send_str(l, LLMOS_T_VERSION, "{\"proto\": 1, \"fw\": \"harness\"}");
        } else if (f.type == LLMOS_T_REQUEST) {
            requests++;
            bytes += f.len;
            digest = llmos_crc32(digest, f.payload, f.len);
            if (echo == 2) {
                r = selftest(l, &f);
            } else {
                r = echo ? llmos_link_send(l, LLMOS_T_CHUNK, f.payload, f.len) : LLMOS_OK;
            }
        } else if (f.type == LLMOS_T_END) {
            char buf[512];
            llmos_dec_stats_t *d = &l->dec.stats;
            snprintf(buf, sizeof(buf),
                     "{\"requests\": %lu, \"bytes\": %lu, \"delivered\": %u, \"duplicates\": %u, \"out_of_order\": %u, "
                     "\"retries\": %u, \"crc_errors\": %u, \"header_errors\": %u, \"oversize\": %u, "
                     "\"flushed\": %u, \"garbage_bytes\": %u, \"digest\": %lu}",
                     requests, bytes, l->stats.delivered, l->stats.duplicates, l->stats.out_of_order, l->stats.retries,
                     d->crc_errors, d->header_errors, d->oversize, d->flushed, d->garbage_bytes,
                     (unsigned long)digest);
            r = send_str(l, LLMOS_T_END, buf);
            if (r == LLMOS_OK) {
                r = llmos_link_flush(l);
            }
            return r == LLMOS_OK ? 0 : 3;
        } else {
            r = send_str(l, LLMOS_T_ERROR, "unexpected frame type");
        }
        if (r != LLMOS_OK) {
            fprintf(stderr, "harness: send failed (%d)\n", r);
            return 3;
        }
    }
}

static int expect(llmos_link_t *l, uint8_t type, llmos_frame_t *f)
{
    for (;;) {
        if (llmos_link_recv(l, f, 10000) != LLMOS_OK) {
            fprintf(stderr, "harness: no reply (wanted type %d)\n", type);
            return -1;
        }
        if (f->type == type) {
            return 0;
        }
        if (f->type == LLMOS_T_ERROR) {
            fprintf(stderr, "error: %s\n", (char *)f->payload);
            return -1;
        }
    }
}

static int client(llmos_link_t *l, const char *prompt, long timeout_s)
{
    llmos_frame_t f;
    if (send_str(l, LLMOS_T_PING, "hi") != LLMOS_OK || expect(l, LLMOS_T_PONG, &f) < 0) {
        return 3;
    }
    if (send_str(l, LLMOS_T_VERSION, "") != LLMOS_OK || expect(l, LLMOS_T_VERSION, &f) < 0) {
        return 3;
    }
    fprintf(stderr, "version: %s\n", (char *)f.payload);
    if (send_str(l, LLMOS_T_REQUEST, prompt) != LLMOS_OK) {
        return 3;
    }
    double end = mono() + (double)timeout_s;
    while (mono() < end) {
        int r = llmos_link_recv(l, &f, 1000);
        if (r == LLMOS_ETIMEOUT) {
            continue;
        }
        if (r != LLMOS_OK) {
            fprintf(stderr, "harness: link failed (%d)\n", r);
            return 3;
        }
        if (f.type == LLMOS_T_CHUNK) {
            fwrite(f.payload, 1, f.len, stdout);
            fflush(stdout);
        } else if (f.type == LLMOS_T_END) {
            fprintf(stderr, "end: %s\n", (char *)f.payload);
            return llmos_link_flush(l) == LLMOS_OK ? 0 : 3;
        } else if (f.type == LLMOS_T_ERROR) {
            fprintf(stderr, "error: %s\n", (char *)f.payload);
            return 2;
        }
    }
    fprintf(stderr, "harness: answer timed out\n");
    return 3;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s echo|sink|client DEV [PROMPT] [key=value...]\n", argv[0]);
        return 2;
    }
    port_t port = {.fd = open_raw(argv[2])};
    if (port.fd < 0) {
        perror(argv[2]);
        return 3;
    }
    long baud = opt(argc, argv, 3, "baud", 0);
    port.byte_s = baud > 0 ? 10.0 / (double)baud : 0;
    llmos_io_t io = {port_read, port_write, now_ms, &port};
    llmos_link_t *l = calloc(1, sizeof(*l));
    srand((unsigned)(getpid() ^ (unsigned)time(NULL)));
    llmos_link_init(l, io, (uint16_t)rand());
    l->ack_timeout_ms = (uint32_t)opt(argc, argv, 3, "ack_ms", 200);
    l->max_retries = (uint32_t)opt(argc, argv, 3, "retries", 8);
    int rc;
    if (strcmp(argv[1], "client") == 0 && argc >= 4) {
        rc = client(l, argv[3], opt(argc, argv, 4, "timeout", 120));
    } else {
        rc = serve(l, strcmp(argv[1], "device") == 0 ? 2 : strcmp(argv[1], "echo") == 0);
    }
    free(l);
    close(port.fd);
    return rc;
}
