"""Both decoders against random, truncated and corrupted input."""

from __future__ import annotations

import subprocess
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmos_edge.esp32.protocol import MAX_PAYLOAD, Decoder, FrameTooLarge, FrameType, encode

payloads = st.binary(max_size=300)
frames = st.lists(st.tuples(st.integers(1, 8), st.integers(0, 0xFFFF), payloads), max_size=8)
garbage = st.binary(max_size=40)


def _drain(dec: Decoder, data: bytes) -> list[tuple[int, int, bytes]]:
    out = dec.feed(data)
    while dec.buf:
        out += dec.flush()
    return [(f.type, f.seq, f.payload) for f in out]


@given(frames, st.lists(garbage, min_size=9, max_size=9))
@settings(max_examples=200, deadline=None)
def test_clean_frames_survive_garbage_between(fs: list[tuple[int, int, bytes]], junk: list[bytes]) -> None:
    stream = b"".join(junk[i] + encode(t, s, p) for i, (t, s, p) in enumerate(fs)) + junk[-1]
    assert _drain(Decoder(), stream) == fs


@given(st.integers(1, 8), st.integers(0, 0xFFFF), payloads, st.data())
@settings(max_examples=300, deadline=None)
def test_corrupted_frame_never_delivered_and_next_survives(
    t: int, seq: int, payload: bytes, data: st.DataObject
) -> None:
    frame = bytearray(encode(t, seq, payload))
    kind = data.draw(st.sampled_from(["flip", "drop", "truncate"]))
    if kind == "flip":
        i = data.draw(st.integers(0, len(frame) - 1))
        frame[i] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "drop":  # not a magic byte nor the CRC: following bytes could stand in for those
        del frame[data.draw(st.integers(2, len(frame) - 6))]
    else:
        del frame[data.draw(st.integers(0, len(frame) - 5)) :]
    good = encode(FrameType.PONG, 7, b"after")
    dec = Decoder()
    got = _drain(dec, bytes(frame) + good)
    assert got == [(FrameType.PONG, 7, b"after")]
    if frame:  # the damaged bytes were seen and thrown away, not silently accepted
        assert dec.stats.errors + dec.stats.garbage_bytes > 0


@given(st.binary(max_size=4000))
@settings(max_examples=200, deadline=None)
def test_random_bytes_never_crash_and_frames_are_valid(data: bytes) -> None:
    for f in Decoder().feed(data):
        assert len(f.payload) <= MAX_PAYLOAD
        assert encode(f.type, f.seq, f.payload, f.flags) in data  # only genuine frames come out


def test_oversize_length_is_rejected_without_waiting() -> None:
    import struct

    from llmos_edge.esp32.protocol import crc8

    head = struct.pack("<BBHH", 1, 0, 1, 60000)
    bogus = b"\xa5\x5a" + head + bytes([crc8(head)])
    dec = Decoder()
    got = dec.feed(bogus + encode(FrameType.PING, 2, b"x"))
    assert [f.payload for f in got] == [b"x"]
    assert dec.stats.oversize == 1


def test_encoder_refuses_oversize_payload() -> None:
    with pytest.raises(FrameTooLarge, match="exceeds"):
        encode(FrameType.CHUNK, 0, b"x" * (MAX_PAYLOAD + 1))


def test_crc_matches_zlib_and_c_layout() -> None:
    f = encode(FrameType.REQUEST, 0x1234, b"hello")
    assert f[:2] == b"\xa5\x5a" and f[4:6] == b"\x34\x12" and f[6:8] == b"\x05\x00"
    assert int.from_bytes(f[-4:], "little") == zlib.crc32(f[2:-4])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_c_decoder_fuzz(fuzz_bin: tuple[Path, bool], seed: int) -> None:
    """Random input, garbage between frames, bit flips/drops/truncation; ASan+UBSan when available."""
    binary, sanitized = fuzz_bin
    r = subprocess.run([str(binary), str(seed), "1500"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ok 1500 rounds" in r.stdout
    print(f"C fuzz seed {seed}: sanitizers {'on' if sanitized else 'unavailable in this gcc'}")
