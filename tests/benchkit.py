"""Helpers for the benchmark tests."""

from __future__ import annotations

import contextlib

import psutil


def bench_processes(tmp_prefix: str) -> list[str]:
    """Live processes started from a bench's temporary directory (`/tmp/<prefix>...`)."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmdline = " ".join(process.info["cmdline"] or [])
            if f"/{tmp_prefix}" in cmdline:
                found.append(f"{process.info['name']} ({process.pid})")
    return found
