"""Helpers for the benchmark tests."""

from __future__ import annotations

import contextlib
import os

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


MARK = "ENOC_TEST_MARK"


def marked_env(mark: str) -> dict[str, str]:
    """The environment for a bench run whose every descendant can be found again: the
    mark is inherited by each process it starts (tests run side by side, so a diff of
    the process table would also see other tests' processes)."""
    return {**os.environ, MARK: mark}


def marked_processes(mark: str) -> list[str]:
    """Live processes that carry `mark` in their environment (zombies are gone already)."""
    found = []
    for process in psutil.process_iter(["name"]):
        with contextlib.suppress(psutil.Error):
            if process.status() != psutil.STATUS_ZOMBIE and process.environ().get(MARK) == mark:
                found.append(f"{process.info['name']} ({process.pid})")
    return found
