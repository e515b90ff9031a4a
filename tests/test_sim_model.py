"""Device behaviour over simulated time: counters, link state, reboots, wraps."""

from __future__ import annotations

from itertools import pairwise

from simkit import small_fleet

from simulators.model import COUNTER32, Device

NOW = 1_800_000_000.0


def router() -> Device:
    return next(d for d in small_fleet(now=NOW) if d.role == "pe-router")


def test_counters_grow_with_time_at_a_plausible_rate() -> None:
    device = router()
    iface = device.interfaces[0]
    first = iface.counters(device, NOW)
    later = iface.counters(device, NOW + 60)
    assert later[0] > first[0] and later[1] > first[1]
    rate_bps = (later[0] - first[0]) * 8 / 60
    assert 0 < rate_bps <= iface.speed_mbps * 1_000_000


def test_counters_are_monotonic_over_a_whole_day() -> None:
    device = router()
    iface = device.interfaces[1]
    values = [iface.counters(device, NOW + t)[0] for t in range(0, 86400, 37)]
    assert values == sorted(values)
    rates = {b - a for a, b in pairwise(values)}
    assert len(rates) > 100  # the traffic curve varies; it is not a constant rate


def test_link_down_freezes_counters_and_link_up_resumes_without_a_jump() -> None:
    device = router()
    iface = device.interfaces[0]
    assert iface.set_link(False, device, NOW)
    assert not iface.oper_up
    frozen = iface.counters(device, NOW + 30)
    assert iface.counters(device, NOW + 300) == frozen
    assert iface.set_link(True, device, NOW + 300)
    resumed = iface.counters(device, NOW + 301)
    assert resumed[0] >= frozen[0]
    assert (
        resumed[0] - frozen[0] <= iface.speed_mbps * 1_000_000 / 8 * 1.01
    )  # at most a second's worth
    assert not iface.set_link(True, device, NOW + 302)  # already up: no change reported


def test_reboot_resets_uptime_and_counters_and_bumps_engine_boots() -> None:
    device = router()
    before = device.interfaces[0].counters(device, NOW)[0]
    boots = device.engine_boots
    device.reboot(NOW + 10)
    assert device.uptime_ticks(NOW + 10) == 0
    assert device.engine_boots == boots + 1
    after = device.interfaces[0].counters(device, NOW + 20)[0]
    assert 0 < after < before


def test_reboot_with_downtime_makes_the_device_unreachable_for_that_long() -> None:
    device = router()
    device.reboot(NOW, downtime=120)
    assert device.faults.unreachable_until == NOW + 120
    assert device.uptime_ticks(NOW + 120) == 0


def test_32_bit_octet_counters_wrap_on_fast_links() -> None:
    device = router()
    iface = max(device.interfaces, key=lambda i: i.avg_in)
    assert iface.avg_in * 3600 > COUNTER32  # more than 4 GiB an hour: it must wrap
    samples = [iface.counters(device, NOW + t)[0] % COUNTER32 for t in range(0, 3600, 10)]
    assert any(b < a for a, b in pairwise(samples))


def test_cpu_high_fault_pins_the_load() -> None:
    device = router()
    normal = device.cpu_load(0, NOW)
    device.faults.cpu_high = True
    assert device.cpu_load(0, NOW) >= 95
    assert normal < 95


def test_devices_of_one_shape_share_one_mib_view() -> None:
    fleet = small_fleet(now=NOW)
    switches = [d for d in fleet if d.role == "access-switch"]
    assert switches[0].view is not None
    assert all(d.view is not None and len(d.view) > 0 for d in fleet)
    assert len({id(d.view) for d in fleet}) <= len(fleet)


def test_the_same_fleet_is_generated_on_every_start() -> None:
    a = {d.name: (d.address, d.engine_id, d.interfaces[0].avg_in) for d in small_fleet(now=NOW)}
    b = {d.name: (d.address, d.engine_id, d.interfaces[0].avg_in) for d in small_fleet(now=NOW)}
    assert a == b
