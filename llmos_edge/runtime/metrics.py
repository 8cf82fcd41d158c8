"""Prometheus text metrics without a client library (nothing extra to install on the device)."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable

Labels = tuple[tuple[str, str], ...]
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, float("inf"))


def _fmt(labels: Labels) -> str:
    if not labels:
        return ""
    body = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in labels
    )
    return "{" + body + "}"


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self.hist: dict[Labels, list[float]] = defaultdict(lambda: [0.0] * len(BUCKETS))
        self.hist_sum: dict[Labels, float] = defaultdict(float)
        self.gauges: list[Callable[[], list[tuple[str, Labels, float]]]] = []

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        with self._lock:
            self.counters[name][tuple(sorted(labels.items()))] += value

    def observe_latency(self, seconds: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            counts = self.hist[key]
            for i, edge in enumerate(BUCKETS):
                if seconds <= edge:
                    counts[i] += 1
            self.hist_sum[key] += seconds

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, series in sorted(self.counters.items()):
                lines.append(f"# TYPE {name} counter")
                lines += [f"{name}{_fmt(k)} {v:g}" for k, v in sorted(series.items())]
            lines.append("# TYPE llmos_request_latency_seconds histogram")
            for key, counts in sorted(self.hist.items()):
                for edge, c in zip(BUCKETS, counts, strict=True):
                    le = "+Inf" if edge == float("inf") else f"{edge:g}"
                    lines.append(f"llmos_request_latency_seconds_bucket{_fmt((*key, ('le', le)))} {c:g}")
                lines.append(f"llmos_request_latency_seconds_sum{_fmt(key)} {self.hist_sum[key]:g}")
                lines.append(f"llmos_request_latency_seconds_count{_fmt(key)} {counts[-1]:g}")
        seen: set[str] = set()
        for source in self.gauges:
            for name, labels, value in source():
                if name not in seen:
                    lines.append(f"# TYPE {name} gauge")
                    seen.add(name)
                lines.append(f"{name}{_fmt(labels)} {value:g}")
        return "\n".join(lines) + "\n"
