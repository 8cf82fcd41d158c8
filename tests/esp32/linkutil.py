"""Test helpers: a corrupting man-in-the-middle between two pty pairs, and port openers."""

from __future__ import annotations

import os
import random
import select
import threading
import tty
from pathlib import Path

import serial


def open_port(path: Path, timeout: float = 0.01) -> serial.Serial:
    return serial.Serial(str(path), timeout=timeout, exclusive=False)


class CorruptingProxy(threading.Thread):
    """Forward bytes between two ptys, injecting bit flips, dropped bytes and garbage."""

    def __init__(self, left: Path, right: Path, rate: float, seed: int) -> None:
        super().__init__(daemon=True)
        self.fds = [self._open(left), self._open(right)]
        self.rate = rate
        self.rng = random.Random(seed)
        self.events = {"flip": 0, "drop": 0, "garbage": 0}
        self.stop = threading.Event()

    @staticmethod
    def _open(path: Path) -> int:
        fd = os.open(str(path), os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)
        return fd

    def _mangle(self, data: bytes) -> bytes:
        if self.rng.random() >= self.rate or not data:
            return data
        buf = bytearray(data)
        kind = self.rng.choice(list(self.events))
        self.events[kind] += 1
        i = self.rng.randrange(len(buf))
        if kind == "flip":
            buf[i] ^= 1 << self.rng.randrange(8)
        elif kind == "drop":
            del buf[i]
        else:
            buf[i:i] = self.rng.randbytes(self.rng.randint(1, 24))
        return bytes(buf)

    def run(self) -> None:
        a, b = self.fds
        while not self.stop.is_set():
            ready, _, _ = select.select([a, b], [], [], 0.05)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                    os.write(b if fd == a else a, self._mangle(data))
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        self.join(2)
        for fd in self.fds:
            os.close(fd)
