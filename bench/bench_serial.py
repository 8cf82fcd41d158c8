"""Host-offload link throughput at a software-paced UART rate, against the raw byte rate.

Run by hand:  .venv/bin/python bench/bench_serial.py [--baud 921600] [--seconds 3] [--runs 3]
Reference: raw paced bytes over the same socat pty pair (what the UART itself can carry).
Measured:  Python Link -> C llmos_proto.c (gcc) sink, frames of --payload bytes, go-back-N window 4,
           both ends paced at the same baud. Goal: payload throughput >= 80% of the raw rate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import serial

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from llmos_edge.esp32.protocol import FrameType, Link, PacedStream  # noqa: E402

PROTO = REPO / "firmware_templates" / "esp32s3-host-offload" / "main"
HARNESS = REPO / "tests" / "esp32" / "harness" / "proto_harness.c"


def pty_pair(tmp: Path, name: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    a, b = tmp / f"{name}-a", tmp / f"{name}-b"
    proc = subprocess.Popen(["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"])
    while not (a.exists() and b.exists()):
        time.sleep(0.01)
    return proc, a, b


def raw_rate(tmp: Path, baud: int, seconds: float) -> float:
    proc, a, b = pty_pair(tmp, "raw")
    total = int(baud / 10 * seconds)
    got = 0
    reader = serial.Serial(str(b), timeout=0.2)

    def read() -> None:
        nonlocal got
        while got < total:
            chunk = reader.read(65536)
            if not chunk:
                break
            got += len(chunk)

    t = threading.Thread(target=read)
    t.start()
    out = PacedStream(serial.Serial(str(a), timeout=0.01), baud)
    t0 = time.monotonic()
    out.write(os.urandom(total))
    t.join()
    dt = time.monotonic() - t0
    proc.terminate()
    return got / dt


def link_rate(tmp: Path, exe: Path, baud: int, seconds: float, payload: int) -> tuple[float, int]:
    proc, a, b = pty_pair(tmp, "link")
    sink = subprocess.Popen([str(exe), "sink", str(a), f"baud={baud}"])
    link = Link(PacedStream(serial.Serial(str(b), timeout=0.01), baud), ack_timeout=0.5)
    data = os.urandom(payload)
    frames = max(1, int(baud / 10 * seconds / payload))
    t0 = time.monotonic()
    for _ in range(frames):
        link.send(FrameType.REQUEST, data)
    link.flush()  # count only what the C side has ACKed
    dt = time.monotonic() - t0
    link.send(FrameType.END)
    sink.wait(10)
    proc.terminate()
    return frames * payload / dt, link.stats.retries


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baud", type=int, default=921600)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--payload", type=int, default=1024)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        exe = tmp / "harness"
        subprocess.run(["gcc", "-std=c99", "-O2", f"-I{PROTO}", str(HARNESS), str(PROTO / "llmos_proto.c"),
                        "-o", str(exe)], check=True)
        raws, links, retries = [], [], 0
        for _ in range(args.runs):
            raws.append(raw_rate(tmp, args.baud, args.seconds))
            rate, r = link_rate(tmp, exe, args.baud, args.seconds, args.payload)
            links.append(rate)
            retries += r
    nominal = args.baud / 10
    raw, link = statistics.median(raws), statistics.median(links)
    print(f"baud {args.baud} (8N1 nominal {nominal:,.0f} B/s), payload {args.payload} B/frame, "
          f"{args.runs} runs")
    print(f"raw paced bytes     median {raw:10,.0f} B/s  runs {[round(x) for x in raws]}")
    print(f"framed link (C<-Py) median {link:10,.0f} B/s  runs {[round(x) for x in links]}  "
          f"retries {retries}")
    print(f"ratio link/raw = {link / raw:.3f}  (goal >= 0.80)   link/nominal = {link / nominal:.3f}")


if __name__ == "__main__":
    main()
