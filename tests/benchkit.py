"""Helpers for the benchmark tests."""

from __future__ import annotations

import contextlib
import os
import struct
import zlib

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


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from IHDR, after checking the signature, chunk CRCs and pixel data."""
    assert data[:8] == PNG_SIGNATURE
    offset, chunks, idat = 8, [], b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        chunks.append(kind)
        if kind == b"IDAT":
            idat += body
        offset += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks
    width, height, depth, color = struct.unpack(">IIBB", data[16:26])
    channels = {2: 3, 6: 4}[color]  # RGB or RGBA
    assert depth == 8
    assert len(zlib.decompress(idat)) == height * (1 + channels * width)
    return width, height
