"""The agent's store-and-forward spool: every message is on disk before it is published.

Records are appended to segment files; a record leaves the spool only when
the broker acknowledged it (`ack`). After a crash or restart the spool is
read back and every unacknowledged record is published again, oldest first:
delivery is at-least-once, and the collector is idempotent (event ids, points
keyed by series and timestamp).

Bounded: when the spool exceeds `max_bytes` the oldest segment is dropped and
its records are counted as lost (`dropped`), so a WAN outage longer than the
disk can hold degrades into losing the oldest data, never into a full disk.
With `drop_oldest=False` the spool keeps everything and its owner decides
what goes (`drop_oldest_segment`): the agent's publisher gives the events and
metrics spools one budget, which only metrics give way to.

Record layout: length (u32), crc32 (u32), seq (u64), topic length (u16), topic, payload.
The acknowledged low-water mark is kept in `acked`, written atomically.
"""

from __future__ import annotations

import bisect
import contextlib
import heapq
import os
import struct
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path

HEADER = struct.Struct("<IIQH")
SEGMENT_SUFFIX = ".seg"


class SpoolError(OSError):
    """The spool directory cannot be used."""


class SpoolWriteError(SpoolError):
    """A record could not be written (a full disk, an I/O error); none of it stays on disk
    and its seq is not used, so the spool is as it was before the append."""


@dataclass(frozen=True)
class Record:
    seq: int
    topic: str
    payload: bytes
    segment: int

    @property
    def size(self) -> int:
        return HEADER.size + len(self.topic.encode()) + len(self.payload)


class Spool:
    """Segmented append-only log with acknowledgements. Not thread-safe; one event loop owns it."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = 512 * 2**20,
        segment_bytes: int = 4 * 2**20,
        fsync: bool = False,
        drop_oldest: bool = True,
    ) -> None:
        if segment_bytes > max_bytes:
            raise ValueError("segment_bytes must not exceed max_bytes")
        self.path = path
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.drop_oldest = drop_oldest  # False: over the bound keeps everything (events)
        self.dropped = 0  # records lost because the spool was full
        self.corrupt = 0  # records skipped because they were damaged on disk
        self.ack_log_failed = 0  # acknowledgements the disk could not record
        self._pending: deque[Record] = deque()  # not yet handed out, oldest first
        self._inflight: dict[int, Record] = {}  # handed out, not yet acknowledged
        self._segments: dict[int, int] = {}  # segment number -> unacknowledged records in it
        self._segment_sizes: dict[int, int] = {}
        self._acked_low = 0  # every seq <= this was acknowledged
        self._acked_above: set[int] = set()
        self._next_seq = 1
        self._current = 0
        self._ack_log: int | None = None  # file descriptor of acked.log
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(exc.errno, f"spool directory {path}: {exc.strerror}") from None
        self._load()

    # ---------------------------------------------------------------- public API

    @property
    def depth(self) -> int:
        """Records not yet acknowledged (pending and in flight)."""
        return len(self._pending) + len(self._inflight)

    @property
    def size_bytes(self) -> int:
        return sum(self._segment_sizes.values())

    @property
    def inflight(self) -> int:
        """Records handed out and not yet acknowledged."""
        return len(self._inflight)

    @property
    def next_seq(self) -> int:
        """The seq the next `append` returns (persisted across restarts, always increasing)."""
        return self._next_seq

    def append(self, topic: str, payload: bytes) -> int:
        """Write a record; raises SpoolWriteError (and leaves nothing behind) when it cannot."""
        seq = self._next_seq
        topic_bytes = topic.encode()
        body = struct.pack("<QH", seq, len(topic_bytes)) + topic_bytes + payload
        length = HEADER.size + len(topic_bytes) + len(payload)
        record_bytes = struct.pack("<II", length, zlib.crc32(body)) + body
        before = 0
        path = self._segment_path(self._current)
        try:
            current = self._segment_sizes.get(self._current, self.segment_bytes)
            if current and current + length > self.segment_bytes:  # a big record starts empty
                self._roll()
            path = self._segment_path(self._current)
            before = self._segment_sizes[self._current]
            with path.open("ab") as handle:
                handle.write(record_bytes)
                if self.fsync:
                    handle.flush()
                    os.fsync(handle.fileno())
        except OSError as exc:
            # A torn record in the middle of a segment would hide every record after it
            # from the next start: cut the segment back to its last whole record.
            with contextlib.suppress(OSError):
                if path.exists():
                    os.truncate(path, before)
            raise SpoolWriteError(
                exc.errno, f"spool {self.path}: cannot write a record: {exc.strerror or exc}"
            ) from exc
        self._next_seq += 1
        self._segment_sizes[self._current] += length
        self._segments[self._current] += 1
        self._pending.append(Record(seq, topic, payload, self._current))
        self._enforce_bound()
        return seq

    def take(self, limit: int) -> list[Record]:
        """Hand out up to `limit` records, oldest first; they stay on disk until acknowledged."""
        out: list[Record] = []
        while self._pending and len(out) < limit:
            record = self._pending.popleft()
            self._inflight[record.seq] = record
            out.append(record)
        return out

    def take_after(self, seq: int, limit: int) -> list[Record]:
        """Hand out up to `limit` records newer than `seq`, oldest first (the live lane)."""
        newer: list[Record] = []
        while self._pending and self._pending[-1].seq > seq:
            newer.append(self._pending.pop())
        newer.reverse()
        out, rest = newer[:limit], newer[limit:]
        self._pending.extend(rest)
        for record in out:
            self._inflight[record.seq] = record
        return out

    def ack(self, seq: int) -> None:
        record = self._inflight.pop(seq, None)
        if record is None:
            return
        # Out-of-order acks are logged so that a kill -9 does not replay what was delivered.
        try:
            if self._ack_log is None:
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
                self._ack_log = os.open(self.path / "acked.log", flags, 0o600)
            os.write(self._ack_log, seq.to_bytes(8, "little"))
        except OSError:
            # A full disk: the broker has the record; at worst a restart sends it again
            # (delivery is at least once, consumers deduplicate by seq).
            self.ack_log_failed += 1
        self._segments[record.segment] -= 1
        self._acked_above.add(seq)
        while self._acked_low + 1 in self._acked_above:
            self._acked_low += 1
            self._acked_above.discard(self._acked_low)
        self._release_segments()

    def release(self, seq: int) -> None:
        """A handed-out record was not accepted (the broker refused it): it goes back among
        the pending records, in order, to be handed out again."""
        record = self._inflight.pop(seq, None)
        if record is not None:
            at = bisect.bisect_left(self._pending, seq, key=lambda r: r.seq)
            self._pending.insert(at, record)

    def drop_oldest_segment(self) -> int:
        """Drop the oldest segment (the current one too: it is closed first) with every
        record in it, acknowledged or not; returns how many unacknowledged records went,
        which `dropped` counts. 0 when the spool holds nothing."""
        if self._segment_sizes.get(self._current, 0) and len(self._segments) == 1:
            self._roll()
        oldest = min(self._segments)
        if oldest == self._current:
            return 0
        lost: list[Record] = []
        while self._pending and self._pending[0].segment == oldest:  # pending is in seq order
            lost.append(self._pending.popleft())
        lost += [r for r in self._inflight.values() if r.segment == oldest]
        self.dropped += len(lost)
        for record in lost:
            self._inflight.pop(record.seq, None)
            self._acked_above.add(record.seq)  # gone for good: a restart must not replay it
        self._segment_path(oldest).unlink(missing_ok=True)
        del self._segments[oldest]
        del self._segment_sizes[oldest]
        while self._acked_low + 1 in self._acked_above:
            self._acked_low += 1
            self._acked_above.discard(self._acked_low)
        return len(lost)

    def requeue_inflight(self) -> int:
        """The broker connection dropped: unacknowledged records go back among the pending
        ones, in order (live records in flight are newer than the backlog still pending)."""
        records = sorted(self._inflight.values(), key=lambda r: r.seq)
        self._inflight.clear()
        self._pending = deque(heapq.merge(records, self._pending, key=lambda r: r.seq))
        return len(records)

    def close(self) -> None:
        """Persist the acknowledged mark; safe to call twice, and on a full disk (the
        acknowledgement log written so far then tells the next start what was delivered)."""
        with contextlib.suppress(OSError):
            self._write_acked()
        if self._ack_log is not None:
            os.close(self._ack_log)
            self._ack_log = None

    # ---------------------------------------------------------------- internals

    def _segment_path(self, number: int) -> Path:
        return self.path / f"{number:012d}{SEGMENT_SUFFIX}"

    def _roll(self) -> None:
        self._current += 1
        self._segment_sizes[self._current] = 0
        self._segments[self._current] = 0
        # On a full disk neither may work: the next append creates the segment (or fails
        # cleanly), and the acknowledgement log still holds what the mark would have said.
        with contextlib.suppress(OSError):
            self._segment_path(self._current).touch()
            self._write_acked()

    def _release_segments(self) -> None:
        for number in sorted(self._segments):
            if number == self._current or self._segments[number] > 0:
                break
            self._segment_path(number).unlink(missing_ok=True)
            del self._segments[number]
            del self._segment_sizes[number]

    def _enforce_bound(self) -> None:
        if not self.drop_oldest:
            return
        while self.size_bytes > self.max_bytes and len(self._segments) > 1:
            self.drop_oldest_segment()

    def _write_acked(self) -> None:
        tmp = self.path / "acked.tmp"
        tmp.write_text(f"{self._acked_low}\n")
        tmp.replace(self.path / "acked")
        log_tmp = self.path / "acked.log.tmp"
        log_tmp.write_bytes(b"".join(s.to_bytes(8, "little") for s in sorted(self._acked_above)))
        if self._ack_log is not None:
            os.close(self._ack_log)
            self._ack_log = None
        log_tmp.replace(self.path / "acked.log")

    def _load(self) -> None:
        acked_file = self.path / "acked"
        try:
            self._acked_low = int(acked_file.read_text().strip() or 0)
        except FileNotFoundError:
            self._acked_low = 0
        except ValueError:
            self._acked_low = 0
            self.corrupt += 1
        try:
            log = (self.path / "acked.log").read_bytes()
        except FileNotFoundError:
            log = b""
        for i in range(0, len(log) - len(log) % 8, 8):
            seq = int.from_bytes(log[i : i + 8], "little")
            if seq > self._acked_low:
                self._acked_above.add(seq)
        numbers = sorted(
            int(p.stem) for p in self.path.glob(f"*{SEGMENT_SUFFIX}") if p.stem.isdigit()
        )
        highest_seq = self._acked_low
        for number in numbers:
            data = self._segment_path(number).read_bytes()
            self._segments[number] = 0
            self._segment_sizes[number] = len(data)
            pos = 0
            while pos < len(data):
                if pos + 8 > len(data):
                    self.corrupt += 1  # a torn write at the end of the last segment
                    break
                length, crc = struct.unpack_from("<II", data, pos)
                end = pos + length
                if length < HEADER.size or end > len(data):
                    self.corrupt += 1  # a torn write at the end of the last segment
                    break
                body = data[pos + 8 : end]
                if zlib.crc32(body) != crc:
                    self.corrupt += 1
                    pos = end
                    continue
                seq, topic_len = struct.unpack_from("<QH", body, 0)
                topic = body[10 : 10 + topic_len].decode(errors="replace")
                payload = body[10 + topic_len :]
                highest_seq = max(highest_seq, seq)
                if seq > self._acked_low and seq not in self._acked_above:
                    self._pending.append(Record(seq, topic, payload, number))
                    self._segments[number] += 1
                pos = end
        self._next_seq = highest_seq + 1
        self._current = numbers[-1] + 1 if numbers else 1
        self._segments[self._current] = 0
        self._segment_sizes[self._current] = 0
        self._segment_path(self._current).touch()
        self._release_segments()
