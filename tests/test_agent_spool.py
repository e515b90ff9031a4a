"""The spool: nothing leaves it unacknowledged; restarts replay in order; the bound is kept;
the publisher's one budget for events and metrics drops only metrics and says so once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.publisher import Publisher
from agent.spool import Spool, SpoolError, SpoolWriteError
from enoc.config import parse_config
from enoc.wire import (
    BgpSample,
    DeviceSample,
    Event,
    EventsMessage,
    InterfaceSample,
    MetricsMessage,
    decode,
)


def fill(spool: Spool, count: int, size: int = 100) -> list[int]:
    return [
        spool.append(f"enoc/v1/nyc/nyc-1/metrics#{i}", bytes([i % 256]) * size)
        for i in range(count)
    ]


def test_records_are_handed_out_oldest_first_and_leave_only_when_acked(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    seqs = fill(spool, 5)
    assert seqs == [1, 2, 3, 4, 5]
    batch = spool.take(3)
    assert [r.seq for r in batch] == [1, 2, 3]
    assert batch[0].topic.endswith("#0") and batch[2].payload == b"\x02" * 100
    assert spool.depth == 5
    spool.ack(2)
    spool.ack(1)
    assert spool.depth == 3
    assert [r.seq for r in spool.take(10)] == [4, 5]


def test_a_restart_replays_everything_unacknowledged_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1000)
    fill(spool, 30)
    for record in spool.take(10):
        spool.ack(record.seq)
    spool.close()
    again = Spool(tmp_path, segment_bytes=1000)
    assert [r.seq for r in again.take(100)] == list(range(11, 31))
    assert again.append("t", b"x") == 31  # sequence numbers continue


def test_a_crash_without_close_loses_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1000)
    fill(spool, 20)
    for record in spool.take(5):
        spool.ack(record.seq)
    # no close(): the acked mark on disk may be older, so some records come back (at least once)
    again = Spool(tmp_path, segment_bytes=1000)
    replayed = [r.seq for r in again.take(100)]
    assert replayed == sorted(replayed)
    assert set(range(6, 21)) <= set(replayed)


def test_requeue_puts_inflight_records_back_in_front_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    fill(spool, 6)
    spool.take(4)
    spool.ack(2)
    assert spool.requeue_inflight() == 3
    assert [r.seq for r in spool.take(10)] == [1, 3, 4, 5, 6]


def test_acknowledged_segments_are_deleted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1000)
    fill(spool, 40)
    segments_before = len(list(tmp_path.glob("*.seg")))
    assert segments_before > 3
    for record in spool.take(40):
        spool.ack(record.seq)
    assert len(list(tmp_path.glob("*.seg"))) == 1  # only the current one remains
    assert spool.depth == 0


def test_the_bound_drops_the_oldest_and_counts_it(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=5000, segment_bytes=1000)
    fill(spool, 200)
    assert spool.size_bytes <= 5000 + 1000
    assert spool.dropped > 0
    remaining = [r.seq for r in spool.take(1000)]
    assert remaining == list(range(201 - len(remaining), 201))  # the newest survive
    assert spool.dropped + len(remaining) == 200


def test_a_damaged_record_is_skipped_and_counted_and_the_rest_survive(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    fill(spool, 3)
    spool.close()
    segment = sorted(tmp_path.glob("*.seg"))[0]
    data = bytearray(segment.read_bytes())
    record_len = len(data) // 3
    data[record_len + 30] ^= 0xFF  # corrupt the second record's payload
    segment.write_bytes(bytes(data) + b"\x07\x00")  # and a torn write at the end
    again = Spool(tmp_path)
    assert [r.seq for r in again.take(10)] == [1, 3]
    assert again.corrupt == 2


def test_an_unusable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SpoolError, match="spool directory"):
        Spool(blocker / "spool")


def test_a_released_record_goes_back_in_order_and_out_again(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    fill(spool, 5)
    taken = spool.take(3)
    spool.ack(1)
    spool.release(taken[2].seq)  # the broker refused seq 3
    spool.release(99)  # unknown: nothing happens
    assert spool.depth == 4 and spool.inflight == 1
    assert [r.seq for r in spool.take(10)] == [3, 4, 5]


def test_requeue_after_the_live_lane_keeps_the_backlog_oldest_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    fill(spool, 10)
    live = spool.take_after(8, 10)  # the newest went out at once, the backlog waits
    assert [r.seq for r in live] == [9, 10]
    spool.take(2)
    spool.requeue_inflight()  # the connection broke with both lanes in flight
    assert [r.seq for r in spool.take(100)] == list(range(1, 11))


def test_dropping_the_oldest_segment_takes_the_current_one_last_and_for_good(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path, segment_bytes=1000, drop_oldest=False)
    fill(spool, 25)
    first = spool.drop_oldest_segment()
    assert 0 < first < 25 and spool.dropped == first
    spool.take(2)  # in flight: dropped all the same, an ack after that changes nothing
    while spool.size_bytes:
        spool.drop_oldest_segment()
    spool.ack(first + 1)
    assert spool.dropped == 25 and spool.depth == 0
    assert spool.drop_oldest_segment() == 0, "nothing left to drop"
    spool.close()
    again = Spool(tmp_path, segment_bytes=1000)
    assert again.take(100) == [] and again.append("t", b"x") == 26


# ---------------------------------------------------------------- one budget for both spools


def publisher(tmp_path: Path, budget: int) -> Publisher:
    config = parse_config(
        f"agent_id: nyc-1\nsite: nyc\nrtc: americas\nmqtt: {{url: 'mqtt://127.0.0.1:1'}}\n"
        f"spool: {{path: '{tmp_path / 'spool'}', max_bytes: {budget}}}\n",
        AgentConfig,
    )
    return Publisher(config, health=dict, inventory_size=lambda: 0)


def metrics(n: int) -> MetricsMessage:
    sample = DeviceSample("nyc-pe-1", "127.0.0.1", 1.0, {"cpu": 1.0, "pad": "x" * 400})
    return MetricsMessage("nyc-1", "nyc", "americas", 0, float(n), samples=[sample])


def events(n: int) -> EventsMessage:
    event = Event(f"e{n}", float(n), "nyc-pe-1", "if:1", "link", "down", message="x" * 300)
    return EventsMessage("nyc-1", "nyc", "americas", 0, float(n), events=[event])


def drain(spool: Spool) -> None:
    for record in spool.take(10**6):
        spool.ack(record.seq)


def test_metrics_make_room_for_events_within_one_budget_logged_once_a_streak(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="enoc.agent.publisher")
    budget = 32 * 1024
    pub = publisher(tmp_path, budget)
    segment = pub.metrics.segment_bytes
    assert segment <= budget // 8, "dropping a segment frees room without wasting the budget"
    for n in range(300):
        pub.submit_metrics(metrics(n))
        if n % 10 == 0:
            pub.submit_events(events(n))
        assert pub.spool_bytes <= budget, "the budget holds for both spools together"
    assert pub.events.dropped == 0 and pub.events.depth == 30, "events are never dropped"
    assert pub.metrics.dropped > 100
    kept = [r.seq for r in pub.metrics.take(10**6)]
    assert kept == list(range(301 - len(kept), 301)), "the oldest metrics went, the newest stayed"
    assert pub.metrics.dropped + len(kept) == 300
    over = [r for r in caplog.records if "over its budget" in r.getMessage()]
    assert len(over) == 1 and over[0].levelname == "WARNING", "one line for the whole streak"
    drain(pub.metrics)
    drain(pub.events)
    pub.submit_metrics(metrics(300))  # under half the budget again: the streak ends
    pub.submit_metrics(metrics(301))
    back = [r for r in caplog.records if "back under its budget" in r.getMessage()]
    assert len(back) == 1 and f"{pub.metrics.dropped} metrics messages" in back[0].getMessage()
    for n in range(302, 600):  # a second outage is a second streak
        pub.submit_metrics(metrics(n))
    assert len([r for r in caplog.records if "over its budget" in r.getMessage()]) == 2
    asyncio.run(pub.close())


def test_events_alone_over_the_budget_are_kept_and_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="enoc.agent.publisher")
    budget = 16 * 1024
    pub = publisher(tmp_path, budget)
    for n in range(200):
        pub.submit_events(events(n))
        pub.submit_metrics(metrics(n))
    assert pub.events.depth == 200 and pub.events.size_bytes > budget, "kept, past the budget"
    assert pub.metrics.depth == 0 and pub.metrics.dropped == 200, "metrics gave way entirely"
    loud = [r for r in caplog.records if "events alone exceed" in r.getMessage()]
    assert len(loud) == 1 and loud[0].levelname == "ERROR"
    asyncio.run(pub.close())
    again = publisher(tmp_path, budget)  # a restart keeps them too, and says so again
    assert again.events.depth == 200
    drain(again.events)
    again.submit_metrics(metrics(200))
    assert any("events back under" in r.getMessage() for r in caplog.records)
    assert again.metrics.depth == 1
    asyncio.run(again.close())


# ---------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real file system of 128 KiB (tmpfs) that fills up: ENOSPC, not a simulation."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=128k,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def filler(disk: Path, size: int) -> Path:
    """Room taken from the disk, to give back later."""
    path = disk / "filler"
    path.write_bytes(b"\0" * size)
    return path


def test_a_full_disk_fails_an_append_cleanly_and_the_spool_reads_back_whole(
    small_disk: Path,
) -> None:
    room = filler(small_disk, 24 * 1024)
    spool = Spool(small_disk / "spool", max_bytes=2**20, segment_bytes=2**20)
    written: list[int] = []

    def fill_the_disk() -> None:
        for i in range(1000):  # 1,000 x 1.5 KiB cannot fit in 128 KiB
            written.append(spool.append("enoc/v1/nyc/nyc-1/metrics", bytes([i % 256]) * 1500))

    with pytest.raises(SpoolWriteError, match="cannot write a record"):
        fill_the_disk()
    assert len(written) > 20, "the disk took records until it was full"
    assert written == list(range(1, len(written) + 1))
    assert spool.next_seq == len(written) + 1, "the failed append used no seq"
    room.unlink()  # room again: appends go on after the last whole record
    after = [spool.append("enoc/v1/nyc/nyc-1/metrics", b"after") for _ in range(3)]
    assert after == [len(written) + 1, len(written) + 2, len(written) + 3]
    spool.close()
    again = Spool(small_disk / "spool", max_bytes=2**20, segment_bytes=2**20)
    records = again.take(10**6)
    assert again.corrupt == 0, "no torn record was left in the segment"
    assert [r.seq for r in records] == [*written, *after]
    assert [r.payload for r in records[-3:]] == [b"after"] * 3
    again.close()


def test_with_the_disk_full_metrics_give_way_and_events_wait_in_memory_in_order(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="enoc.agent.publisher")
    room = filler(small_disk, 40 * 1024)
    pub = publisher(small_disk, 256 * 1024)  # a budget above the disk: the disk fills first
    assert pub.metrics.segment_bytes == 16 * 1024
    for n in range(200):  # ~90 KiB of metrics for the ~50 KiB left
        pub.submit_metrics(metrics(n))
    assert pub.metrics.dropped > 0, "the oldest metrics made room"
    assert pub.stats.unwritten_metrics == 0, "every new poll found room"
    kept = [r.seq for r in pub.metrics.take(10**6)]
    assert kept[-1] == 200 and kept == list(range(201 - len(kept), 201)), "the newest stayed"
    assert pub.budget < pub.max_budget, "the spool is held below what the disk could take"
    full = [r for r in caplog.records if "is failing" in r.getMessage()]
    assert len(full) == 1 and "No space left on device" in full[0].getMessage()
    assert any("over its budget" in r.getMessage() for r in caplog.records)
    pub.metrics.requeue_inflight()
    for n in range(300):  # ~130 KiB of events: more than the whole disk holds
        pub.submit_events(events(n))
    waiting = len(pub._unwritten)
    assert pub.metrics.depth == 0, "every metrics message gave its room to events"
    assert waiting > 0, "events found no room on the disk"
    assert pub.events.dropped == 0 and pub.stats.unwritten_events_lost == 0
    assert pub.spool_depth == pub.events.depth + waiting, "they count as not yet published"
    pub.submit_metrics(metrics(200))
    assert pub.stats.unwritten_metrics == 1, "no room left at all: a new poll is dropped"
    assert len([r for r in caplog.records if "is failing" in r.getMessage()]) == 1, "once"
    # the broker takes what was spooled and the disk has room again
    room.unlink()
    drain(pub.events)
    pub.submit_metrics(metrics(201))  # the next poll writes what waited, first
    assert not pub._unwritten
    spooled = pub.events.take(10**6)
    assert [r.seq for r in spooled] == list(range(301 - waiting, 301)), "seqs gapless"
    ids = [decode(r.topic, r.payload).events[0].id for r in spooled]  # type: ignore[union-attr]
    assert ids == [f"e{n}" for n in range(300 - waiting, 300)], "in the order they happened"
    for record in spooled:
        pub.events.ack(record.seq)
    pub.submit_metrics(metrics(202))  # room on the disk: the configured budget again
    assert pub.budget == pub.max_budget
    assert any("recovered" in r.getMessage() for r in caplog.records)
    assert [r.seq for r in pub.metrics.take(10)][-1] == 202
    asyncio.run(pub.close())


def test_a_full_disk_loses_no_event_of_the_agent(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The agent saves its open problems beside the spool before it spools their events:
    a disk too full for that file must not cost the events (it failed the whole emit)."""
    from agent.app import Agent

    caplog.set_level(logging.INFO, logger="enoc.agent")
    config = small_disk / "agent.yaml"
    config.write_text(
        "agent_id: nyc-1\nsite: nyc\nrtc: americas\nmqtt: {url: 'mqtt://127.0.0.1:1'}\n"
        f"spool: {{path: '{small_disk / 'spool'}', max_bytes: 262144}}\n"
    )
    agent = Agent(config)
    with (small_disk / "everything").open("wb") as rest, contextlib.suppress(OSError):
        rest.write(b"\0" * 2**20)  # the disk, full
    down = Event("e1", 1.0, "nyc-pe-1", "if:1", "link", "down", message="if:1 down")
    agent._emit_events([down])
    agent._emit_events([Event("e2", 2.0, "nyc-pe-1", "if:1", "link", "up", message="up")])
    assert [m.events[0].id for m in agent.publisher._unwritten] == ["e1", "e2"], "kept"
    failing = [r for r in caplog.records if "saving the edge state" in r.getMessage()]
    assert len(failing) == 1, "logged once for the streak"
    (small_disk / "everything").unlink()
    agent._emit_events([Event("e3", 3.0, "nyc-pe-1", "if:2", "link", "down", message="down")])
    spooled = agent.publisher.events.take(10)
    assert [decode(r.topic, r.payload).events[0].id for r in spooled] == ["e1", "e2", "e3"]  # type: ignore[union-attr]
    assert any("recovered" in r.getMessage() for r in caplog.records)
    asyncio.run(agent.publisher.close())


# ---------------------------------------------------------------- messages over the size bound


def test_a_metrics_message_over_the_bound_is_spooled_in_halves_in_order(tmp_path: Path) -> None:
    """A router with thousands of interfaces makes one sample larger than the collector
    (mqtt.max_message_size) and the broker (message_size_limit) take: the agent splits it,
    by sample and then by interface, each part under publishing.max_message_bytes, every
    interface once and in order, each part with the device's fields, seqs gapless."""
    config = parse_config(
        "agent_id: nyc-1\nsite: nyc\nrtc: americas\nmqtt: {url: 'mqtt://127.0.0.1:1'}\n"
        f"spool: {{path: '{tmp_path / 'spool'}'}}\npublishing: {{max_message_bytes: 4096}}\n",
        AgentConfig,
    )
    pub = Publisher(config, health=dict, inventory_size=lambda: 0)
    big = DeviceSample(
        "nyc-pe-1",
        "127.0.0.1",
        1.0,
        {"cpu": 1.0},
        interfaces=[
            InterfaceSample(i, f"Gi0/{i}", "GigabitEthernet", "x" * 40, {"ifOperStatus": 1})
            for i in range(1, 301)
        ],
        bgp=[BgpSample(f"10.0.0.{i}", {"state": 6}) for i in range(1, 4)],
    )
    small = DeviceSample("nyc-sw-1", "127.0.0.2", 1.0, {"cpu": 2.0})
    pub.submit_metrics(MetricsMessage("nyc-1", "nyc", "americas", 0, 1.0, samples=[small, big]))
    records = pub.metrics.take(10**6)
    assert len(records) > 5 and pub.stats.metrics_split == len(records) - 1
    assert all(len(r.payload) <= 4096 for r in records)
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    parts = [decode(r.topic, r.payload) for r in records]
    assert all(
        isinstance(p, MetricsMessage) and p.seq == r.seq
        for p, r in zip(parts, records, strict=True)
    )
    samples = [s for p in parts if isinstance(p, MetricsMessage) for s in p.samples]
    assert samples[0].device == "nyc-sw-1" and samples[0].fields == {"cpu": 2.0}
    assert all(s.device == "nyc-pe-1" and s.fields == {"cpu": 1.0} for s in samples[1:])
    assert [i.if_index for s in samples[1:] for i in s.interfaces] == list(range(1, 301))
    assert [b.peer for s in samples[1:] for b in s.bgp] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert pub.stats.metrics_oversize == 0


def test_one_interface_over_the_bound_is_sent_whole_and_counted(tmp_path: Path) -> None:
    config = parse_config(
        "agent_id: nyc-1\nsite: nyc\nrtc: americas\nmqtt: {url: 'mqtt://127.0.0.1:1'}\n"
        f"spool: {{path: '{tmp_path / 'spool'}'}}\npublishing: {{max_message_bytes: 4096}}\n",
        AgentConfig,
    )
    pub = Publisher(config, health=dict, inventory_size=lambda: 0)
    sample = DeviceSample("nyc-pe-1", "127.0.0.1", 1.0, interfaces=[InterfaceSample(1, "a" * 8000)])
    pub.submit_metrics(MetricsMessage("nyc-1", "nyc", "americas", 0, 1.0, samples=[sample]))
    (record,) = pub.metrics.take(10)
    assert len(record.payload) > 4096
    assert pub.stats.metrics_oversize == 1 and pub.stats.metrics_split == 0
