"""Transports: ssh (asyncssh) and local, behind one interface (see base.Transport)."""

from .base import EXEC, GET, PUT, ExecResult, Process, Progress, Transport

__all__ = ["EXEC", "GET", "PUT", "ExecResult", "Process", "Progress", "Transport"]
