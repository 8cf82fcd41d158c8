"""Python side of the host-offload framed protocol (the C side is firmware_templates/.../llmos_proto.c).

Frame, little-endian: A5 5A | type u8 | flags u8 | seq u16 | len u16 | hcrc u8 | payload | crc32 u32.
hcrc (CRC-8, poly 0x07, over type..len) rejects a corrupted length at once; crc32 (zlib) covers
type..payload. The link sends one frame at a time and waits for its ACK (flow control), retries on
timeout, delivers each sequence number once, and leaves frames un-ACKed when its queue is full.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import os
import struct
import time
import zlib
from typing import Protocol

from ._errors import DeviceError

MAGIC = b"\xa5\x5a"
HEADER_LEN = 9
OVERHEAD = 13
MAX_PAYLOAD = 1024
PROTO_VERSION = 1
_HDR = struct.Struct("<2sBBHHB")


class FrameType(enum.IntEnum):
    REQUEST = 1
    CHUNK = 2
    END = 3
    ERROR = 4
    PING = 5
    PONG = 6
    VERSION = 7
    ACK = 8


@dataclasses.dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes = b""
    flags: int = 0


class LinkTimeout(DeviceError):
    """The peer did not ACK a frame after all retries."""


class LinkClosed(DeviceError):
    """The serial port vanished (cable unplugged) or failed."""


class FrameTooLarge(DeviceError):
    """A payload above MAX_PAYLOAD was handed to the encoder."""


def _crc8_table() -> bytes:
    table = bytearray(256)
    for i in range(256):
        c = i
        for _ in range(8):
            c = ((c << 1) ^ 0x07) & 0xFF if c & 0x80 else (c << 1) & 0xFF
        table[i] = c
    return bytes(table)


_CRC8 = _crc8_table()


def crc8(data: bytes) -> int:
    c = 0
    for b in data:
        c = _CRC8[c ^ b]
    return c


def encode(ftype: int, seq: int, payload: bytes = b"", flags: int = 0) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise FrameTooLarge(
            f"payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD}-byte frame limit",
            hints=["split the data into several CHUNK frames"],
        )
    head = struct.pack("<BBHH", ftype, flags, seq & 0xFFFF, len(payload))
    head += bytes([crc8(head)])
    body = head + payload
    return MAGIC + body + struct.pack("<I", zlib.crc32(body))


@dataclasses.dataclass
class DecoderStats:
    frames: int = 0
    crc_errors: int = 0
    header_errors: int = 0
    oversize: int = 0
    garbage_bytes: int = 0
    flushed: int = 0

    @property
    def errors(self) -> int:
        return self.crc_errors + self.header_errors + self.oversize + self.flushed


class Decoder:
    """Byte stream -> frames; resynchronises on the magic after any mismatch."""

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self.buf = bytearray()
        self.max_payload = max_payload
        self.stats = DecoderStats()

    def feed(self, data: bytes) -> list[Frame]:
        self.buf += data
        return self._parse()

    def flush(self) -> list[Frame]:
        """Drop a partial frame after an idle gap and rescan what followed its first byte."""
        if not self.buf:
            return []
        self.stats.flushed += 1
        del self.buf[0]
        return self._parse()

    def _skip(self, counter: str) -> None:
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        del self.buf[0]

    def _parse(self) -> list[Frame]:
        out: list[Frame] = []
        buf = self.buf
        while buf:
            i = buf.find(MAGIC)
            if i < 0:
                keep = 1 if buf[-1] == MAGIC[0] else 0
                self.stats.garbage_bytes += len(buf) - keep
                del buf[: len(buf) - keep]
                break
            if i:
                self.stats.garbage_bytes += i
                del buf[:i]
            if len(buf) < HEADER_LEN:
                break
            _, ftype, flags, seq, length, hcrc = _HDR.unpack_from(buf)
            if crc8(bytes(buf[2:8])) != hcrc:
                self._skip("header_errors")
                continue
            if length > self.max_payload:
                self._skip("oversize")
                continue
            total = OVERHEAD + length
            if len(buf) < total:
                break
            (want,) = struct.unpack_from("<I", buf, HEADER_LEN + length)
            if zlib.crc32(buf[2 : HEADER_LEN + length]) != want:
                self._skip("crc_errors")
                continue
            out.append(Frame(ftype, seq, bytes(buf[HEADER_LEN : HEADER_LEN + length]), flags))
            self.stats.frames += 1
            del buf[:total]
        return out


class ByteStream(Protocol):
    """What the link needs from a port: pyserial's Serial fits (with a short read timeout)."""

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes, /) -> int | None: ...


@dataclasses.dataclass
class LinkStats:
    sent: int = 0
    retries: int = 0
    delivered: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    queue_full: int = 0


F_SYN = 0x01  # first frame of a sender session: the receiver adopts its sequence number


def seq_diff(a: int, b: int) -> int:
    """a - b in 16-bit sequence space, in [-32768, 32767]."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


@dataclasses.dataclass
class _Pending:
    seq: int
    data: bytes
    ftype: int
    sent_at: float = 0.0


class Link:
    """Reliable, ordered frame exchange over a ByteStream: go-back-N with a small window.

    send() returns once the frame is on the wire and inside the window (it blocks while the
    window is full: flow control); ACKs are cumulative; a silent window is resent after
    ack_timeout, up to max_retries times, then LinkTimeout. The first frame of a session carries
    SYN and goes alone, so a restarted peer re-synchronises without losing or repeating frames.
    """

    def __init__(
        self,
        port: ByteStream,
        *,
        ack_timeout: float = 0.2,
        max_retries: int = 8,
        window: int = 4,
        queue_size: int = 16,
        initial_seq: int | None = None,
        idle_flush: float = 0.1,
    ) -> None:
        self.port = port
        self.ack_timeout = ack_timeout
        self.max_retries = max_retries
        self.window = window
        self.queue_size = queue_size
        self.idle_flush = idle_flush
        self.decoder = Decoder()
        self.stats = LinkStats()
        self.tx_seq = int.from_bytes(os.urandom(2), "little") if initial_seq is None else initial_seq
        self.tx_synced = False
        self.unacked: collections.deque[_Pending] = collections.deque()
        self.attempts = 0
        self.rx_expected = 0
        self.rx_synced = False
        self.queue: collections.deque[Frame] = collections.deque()
        self._last_rx = time.monotonic()

    def send(self, ftype: int, payload: bytes = b"") -> None:
        while len(self.unacked) >= (self.window if self.tx_synced else 1):
            self._pump()
        flags = 0 if self.tx_synced or self.unacked else F_SYN
        p = _Pending(self.tx_seq, encode(ftype, self.tx_seq, payload, flags), ftype)
        self.tx_seq = (self.tx_seq + 1) & 0xFFFF
        if not self.unacked:
            self.attempts = 0
        self.unacked.append(p)
        self._transmit(p)

    def flush(self) -> None:
        """Wait until every sent frame is ACKed (or raise LinkTimeout)."""
        while self.unacked:
            self._pump()

    def recv(self, timeout: float) -> Frame | None:
        deadline = time.monotonic() + timeout
        while not self.queue:
            if time.monotonic() >= deadline:
                return None
            self._pump()
        return self.queue.popleft()

    def _transmit(self, p: _Pending) -> None:
        p.sent_at = time.monotonic()
        self._write(p.data)
        self.stats.sent += 1

    def _check_timeout(self) -> None:
        if not self.unacked or time.monotonic() - self.unacked[0].sent_at < self.ack_timeout:
            return
        if self.attempts >= self.max_retries:
            name = FrameType(self.unacked[0].ftype).name
            raise LinkTimeout(
                f"no ACK for a {name} frame after {self.max_retries + 1} tries",
                hints=["check that the device runs the llmos firmware", "try another cable or port"],
            )
        self.attempts += 1
        self.stats.retries += 1
        for p in list(self.unacked):  # go-back-N: resend the whole window in order
            self._transmit(p)

    def _write(self, data: bytes) -> None:
        try:
            self.port.write(data)
        except Exception as exc:  # pyserial raises SerialException, ptys OSError
            raise LinkClosed(f"serial write failed: {exc}") from exc

    def _read(self) -> bytes:
        """Wait (up to the port's timeout) for one byte, then take whatever else is waiting."""
        try:
            data = self.port.read(1)
            waiting = int(getattr(self.port, "in_waiting", 0)) if data else 0
            return data + self.port.read(waiting) if waiting else data
        except Exception as exc:
            raise LinkClosed(f"serial read failed: {exc}") from exc

    def _pump(self) -> None:
        data = self._read()
        now = time.monotonic()
        if data:
            self._last_rx = now
            frames = self.decoder.feed(data)
        elif self.decoder.buf and now - self._last_rx >= self.idle_flush:
            frames = self.decoder.flush()  # a partial frame and silence: its length was corrupted
        else:
            frames = []
        for f in frames:
            if f.type == FrameType.ACK:
                self._on_ack(f.seq)
            else:
                self._on_data(f)
        self._check_timeout()

    def _on_ack(self, seq: int) -> None:
        if not self.unacked:
            return
        n = seq_diff(seq, self.unacked[0].seq) + 1  # cumulative: everything up to seq
        if 0 < n <= len(self.unacked):
            for _ in range(n):
                self.unacked.popleft()
            self.tx_synced = True
            self.attempts = 0
            if self.unacked:
                self.unacked[0].sent_at = time.monotonic()

    def _on_data(self, f: Frame) -> None:
        last = (self.rx_expected - 1) & 0xFFFF
        d = seq_diff(f.seq, self.rx_expected)
        if f.flags & F_SYN and not (self.rx_synced and f.seq == last):
            d = 0  # a new session from the peer
        elif not self.rx_synced:
            d = 0  # we restarted while the peer kept its session
        if d != 0:
            if d < 0:
                self.stats.duplicates += 1
            else:
                self.stats.out_of_order += 1  # an earlier frame was lost: wait for go-back-N
            if self.rx_synced:
                self._write(encode(FrameType.ACK, last))
            return
        if len(self.queue) >= self.queue_size:
            self.stats.queue_full += 1
            return
        self.queue.append(f)
        self.rx_expected = (f.seq + 1) & 0xFFFF
        self.rx_synced = True
        self.stats.delivered += 1
        self._write(encode(FrameType.ACK, f.seq))


class PacedStream:
    """Wrap a port so writes leave at a UART's byte rate (8N1: baud / 10 bytes per second).

    Like a UART driver's TX buffer: one write() is queued at once and drains at the baud rate; a
    late wake-up of this thread catches up within the write (the hardware would not have paused),
    while idle time between writes is lost, as on a real line.
    """

    def __init__(self, port: ByteStream, baud: int, slice_bytes: int = 64) -> None:
        self.port = port
        self.rate = baud / 10.0
        self.slice = slice_bytes
        self._next = time.monotonic()

    def read(self, size: int = 1) -> bytes:
        return self.port.read(size)

    @property
    def in_waiting(self) -> int:
        return int(getattr(self.port, "in_waiting", 0))

    def write(self, data: bytes, /) -> int:
        start = max(self._next, time.monotonic())
        for i in range(0, len(data), self.slice):
            part = data[i : i + self.slice]
            due = start + i / self.rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.port.write(part)
        self._next = start + len(data) / self.rate
        wait = self._next - time.monotonic()
        if wait > 0:
            time.sleep(wait)  # the last byte has left the "wire" when write() returns
        return len(data)
