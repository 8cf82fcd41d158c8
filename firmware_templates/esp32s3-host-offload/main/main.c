/* ESP32-S3 side of llmos host-offload: a prompt typed on the USB console goes to the host over
 * the framed link on UART0,
 * the answer streams back. App rollback: a new OTA image stays "pending verify" until it has
 * talked to the host (PING/PONG); otherwise it is marked invalid and the bootloader rolls back.
 * NOTE: this file is compiled only by ESP-IDF (idf.py); the protocol code it uses
 * (llmos_proto.c) is also built and tested on the host with gcc.
 */
#include <stdio.h>
#include <string.h>

#include "driver/uart.h"
#include "driver/usb_serial_jtag.h"
#include "esp_app_desc.h"
#include "esp_log.h"
#include "esp_ota_ops.h"
#include "esp_random.h"
#include "esp_timer.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"

#include "llmos_config.h"
#include "llmos_proto.h"

#define HOST_UART UART_NUM_0
static const char *TAG = "llmos";
static llmos_link_t link_state;

static int io_read(void *ctx, uint8_t *buf, size_t n, uint32_t timeout_ms)
{
    (void)ctx;
    int r = uart_read_bytes(HOST_UART, buf, n, pdMS_TO_TICKS(timeout_ms));
    return r < 0 ? -1 : r;
}

static int io_write(void *ctx, const uint8_t *buf, size_t n)
{
    (void)ctx;
    return uart_write_bytes(HOST_UART, buf, n) == (int)n ? 0 : -1;
}

static uint32_t io_now(void *ctx)
{
    (void)ctx;
    return (uint32_t)(esp_timer_get_time() / 1000);
}

static void send_version(llmos_link_t *l)
{
    char buf[192];
    const esp_app_desc_t *app = esp_app_get_description();
    snprintf(buf, sizeof(buf), "{\"proto\": %d, \"fw\": \"%s\", \"target\": \"%s\", \"idf\": \"%s\"}",
             LLMOS_PROTO_VERSION, LLMOS_FW_VERSION, LLMOS_TARGET, app->idf_ver);
    llmos_link_send(l, LLMOS_T_VERSION, (const uint8_t *)buf, strlen(buf));
}

static void console_write(const char *s, size_t n)
{
    usb_serial_jtag_write_bytes(s, n, pdMS_TO_TICKS(100));
}

/* Ask the host one prompt; show the streamed answer on the console. Returns answer bytes or <0. */
static int ask(llmos_link_t *l, const uint8_t *prompt, size_t len)
{
    llmos_frame_t f;
    int chars = 0;
    if (llmos_link_send(l, LLMOS_T_REQUEST, prompt, len) != LLMOS_OK) {
        return -1;
    }
    while (llmos_link_recv(l, &f, 120000) == LLMOS_OK) {
        if (f.type == LLMOS_T_CHUNK) {
            chars += f.len;
            console_write((const char *)f.payload, f.len);
        } else if (f.type == LLMOS_T_END) {
            console_write("\n", 1);
            return chars;
        } else if (f.type == LLMOS_T_ERROR) {
            console_write("\n[host error] ", 14);
            console_write((const char *)f.payload, f.len);
            console_write("\n", 1);
            return -1;
        }
    }
    return -1;
}

static void confirm_or_rollback(llmos_link_t *l)
{
    esp_ota_img_states_t state;
    const esp_partition_t *running = esp_ota_get_running_partition();
    if (esp_ota_get_state_partition(running, &state) != ESP_OK || state != ESP_OTA_IMG_PENDING_VERIFY) {
        return;
    }
    llmos_frame_t f;
    int ok = llmos_link_send(l, LLMOS_T_PING, (const uint8_t *)"boot", 4) == LLMOS_OK &&
             llmos_link_recv(l, &f, 30000) == LLMOS_OK && f.type == LLMOS_T_PONG;
    if (ok) {
        ESP_LOGI(TAG, "self-test passed: marking app valid");
        esp_ota_mark_app_valid_cancel_rollback();
    } else {
        ESP_LOGE(TAG, "self-test failed: rolling back");
        esp_ota_mark_app_invalid_rollback_and_reboot();
    }
}

/* Console on the native USB port: collect a line, then ask the host. */
static void poll_console(llmos_link_t *l)
{
    static uint8_t line[LLMOS_MAX_PAYLOAD];
    static size_t n;
    uint8_t c;
    while (usb_serial_jtag_read_bytes(&c, 1, 0) == 1) {
        if (c == '\r' || c == '\n') {
            if (n) {
                ask(l, line, n);
                n = 0;
            }
        } else if (n < sizeof(line)) {
            line[n++] = c;
        }
    }
}

static void serve(llmos_link_t *l)
{
    llmos_frame_t f;
    for (;;) {
        poll_console(l);
        int r = llmos_link_recv(l, &f, 50);
        if (r == LLMOS_ENOACK || r == LLMOS_EIO) { /* host gone: start a fresh session (SYN) */
            llmos_link_init(l, l->io, (uint16_t)esp_random());
            continue;
        }
        if (r != LLMOS_OK) {
            continue; /* buttons/display would hook in next to poll_console() */
        }
        switch (f.type) {
        case LLMOS_T_PING:
            llmos_link_send(l, LLMOS_T_PONG, f.payload, f.len);
            break;
        case LLMOS_T_VERSION:
            send_version(l);
            break;
        case LLMOS_T_REQUEST: { /* host-initiated self-test: ask the host this prompt back */
            char buf[64];
            int chars = ask(l, f.payload, f.len);
            snprintf(buf, sizeof(buf), chars >= 0 ? "{\"selftest\": \"ok\", \"chars\": %d}" : "{\"selftest\": \"fail\"}",
                     chars);
            llmos_link_send(l, chars >= 0 ? LLMOS_T_END : LLMOS_T_ERROR, (const uint8_t *)buf, strlen(buf));
            break;
        }
        default:
            llmos_link_send(l, LLMOS_T_ERROR, (const uint8_t *)"unexpected frame", 16);
        }
    }
}

void app_main(void)
{
    uart_config_t cfg = {.baud_rate = LLMOS_HOST_BAUD, .data_bits = UART_DATA_8_BITS,
                         .parity = UART_PARITY_DISABLE, .stop_bits = UART_STOP_BITS_1,
                         .flow_ctrl = UART_HW_FLOWCTRL_DISABLE, .source_clk = UART_SCLK_DEFAULT};
    ESP_ERROR_CHECK(uart_driver_install(HOST_UART, 4 * LLMOS_MAX_FRAME, 4 * LLMOS_MAX_FRAME, 0, NULL, 0));
    ESP_ERROR_CHECK(uart_param_config(HOST_UART, &cfg));
    usb_serial_jtag_driver_config_t usb = USB_SERIAL_JTAG_DRIVER_CONFIG_DEFAULT();
    ESP_ERROR_CHECK(usb_serial_jtag_driver_install(&usb));
    llmos_io_t io = {io_read, io_write, io_now, NULL};
    llmos_link_init(&link_state, io, (uint16_t)esp_random());
    confirm_or_rollback(&link_state);
    serve(&link_state);
}
