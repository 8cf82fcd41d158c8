"""What a field technician sees: a progress bar with rate and ETA, or a live fleet table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .fleet import FleetView
from .run import DeployReport, Events

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


class BarEvents(Events):
    """One device: phase names, then a transfer bar (bytes, rate, ETA)."""

    def __init__(self, progress: Progress, label: str) -> None:
        self.progress = progress
        self.task: TaskID = progress.add_task(label, total=None)
        self.label = label

    def phase(self, name: str) -> None:
        self.progress.update(self.task, description=f"{self.label}: {name}")

    def start_bytes(self, total: int) -> None:
        self.progress.update(self.task, total=max(total, 1), completed=0 if total else 1)

    def advance(self, n: int) -> None:
        self.progress.advance(self.task, n)


def make_progress(transient: bool = False) -> Progress:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=transient,
    )


class LiveFleetView(FleetView):
    """Per-device rows in one live view: a progress row while running, a status when done."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.results: dict[str, DeployReport] = {}
        self.bars: dict[str, BarEvents] = {}

    def events_for(self, name: str) -> Events:
        self.bars[name] = BarEvents(self.progress, name)
        return self.bars[name]

    def finished(self, name: str, report: DeployReport) -> None:
        self.results[name] = report
        bar = self.bars.get(name)
        if bar is not None:
            self.progress.update(bar.task, description=f"{name}: {report.status}")


def summary_rows(reports: list[DeployReport]) -> list[list[Any]]:
    return [
        [
            r.device,
            r.status,
            r.version,
            f"{r.bytes_sent / 1e6:.1f} MB",
            f"{r.seconds:.1f}s",
            (r.message or "")[:90],
        ]
        for r in reports
    ]
