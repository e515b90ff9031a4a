"""First sight end to end (issue 16): simulator -> agent -> real Mosquitto -> a subscriber.

An access switch starts with ports admin up and oper down (unused ports) and one of its
uplinks down. Its first polls open no link incident but for the uplink, which the policy
declares monitored; a port going down afterwards does (trap or poll). A restart that kept
the edge state still sees a port that went down while the agent was stopped; one that
lost it takes what it finds as the baseline. A BGP peer down and an unreachable device
are raised at first sight.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from agentkit import Listener, agent_config, running_agent, simulated_site
from simkit import free_udp_port

from enoc.wire import DeviceSample, Event
from testbed.servers import Mosquitto

pytestmark = pytest.mark.servers

SWITCH = "nyc-acc-1"  # ports 1 and 2: "uplink to nyc-core"; 12: admin down


def downs(events: list[Event], device: str, kind: str = "link") -> list[str]:
    """The resources of the raising events of one kind (what opens an incident)."""
    return [
        e.resource for e in events if e.device == device and e.kind == kind and e.state == "down"
    ]


def samples(listener: Listener, device: str) -> list[DeviceSample]:
    return [s for m in listener.metrics() for s in m.samples if s.device == device]


async def test_first_polls_open_no_link_incident_but_transitions_and_monitored_ports_do(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    traps_port = free_udp_port()
    async with (
        simulated_site(tmp_path, traps_port=traps_port) as site,
        Listener(mosquitto.url) as listener,
    ):
        config = agent_config(
            tmp_path,
            mosquitto.url,
            site.inventory,
            traps_port=traps_port,
            extra={"interfaces": {"alert": {"monitored": [{"ifAlias": "(?i)^uplink"}]}}},
        )
        for if_index in (2, 5, 6, 7, 8):  # down before the agent ever saw the switch
            site.sim.inject(SWITCH, {"kind": "link_down", "ifIndex": if_index})
        peer = site.sim.device("nyc-pe-1").bgp_peers[0].remote
        site.sim.inject("nyc-pe-1", {"kind": "bgp_down", "peer": peer})
        site.sim.inject("bog-ce-1", {"kind": "unreachable"})
        edge_state = tmp_path / "spool" / "edge-state.json"
        edge_links = tmp_path / "spool" / "edge-links.json"

        async def polls_of_the_switch(count: int) -> None:
            seen = len(samples(listener, SWITCH))
            await listener.wait_for(
                lambda lst: len(samples(lst, SWITCH)) >= seen + count,
                what=f"{count} polls of {SWITCH}",
            )

        # ---- first run: first sight
        async with running_agent(config):
            await polls_of_the_switch(2)
            await listener.wait_for(
                lambda lst: downs(lst.all_events(), "bog-ce-1", "reachability") != [],
                what="bog-ce-1 unreachable",
            )
            first = listener.all_events()
            assert downs(first, SWITCH) == ["if:2"], "only the monitored uplink"
            assert downs(first, "nyc-pe-1", "bgp") == [f"bgp:{peer}"], "a peer down at start"
            assert downs(first, "bog-ce-1", "reachability") == ["device"]
            assert [e for e in first if e.kind == "link" and e.device != SWITCH] == []
            latest = samples(listener, SWITCH)[-1]
            assert (latest.fields["ports_down"], latest.fields["ports_down_baseline"]) == (5, 4)
            states = {i.if_index: i.fields["ifOperStatus"] for i in latest.interfaces}
            assert [i for i, s in states.items() if s != 1] == [2, 5, 6, 7, 8, 12]
            # a port that was up goes down: the incident, once (trap and poll agree)
            site.sim.inject(SWITCH, {"kind": "link_down", "ifIndex": 3})
            await listener.wait_for(
                lambda lst: "if:3" in downs(lst.all_events(), SWITCH), what="if:3 down"
            )
            await polls_of_the_switch(2)
            assert downs(listener.all_events(), SWITCH) == ["if:2", "if:3"]
        assert edge_state.exists() and edge_links.exists()

        # ---- a restart that kept its edge state: a port down meanwhile is a transition
        site.sim.inject(SWITCH, {"kind": "link_down", "ifIndex": 4})
        mark = len(listener.all_events())
        async with running_agent(config):
            await polls_of_the_switch(2)
            assert downs(listener.all_events()[mark:], SWITCH) == ["if:4"]
            assert downs(listener.all_events()[mark:], "nyc-pe-1", "bgp") == [], "still open"

        # ---- a restart that lost it: what it finds is the baseline (the monitored aside)
        edge_state.unlink()
        edge_links.unlink()
        site.sim.inject(SWITCH, {"kind": "link_down", "ifIndex": 9})
        mark = len(listener.all_events())
        async with running_agent(config):
            await polls_of_the_switch(2)
            again = listener.all_events()[mark:]
            assert downs(again, SWITCH) == ["if:2"], "only the monitored uplink, again"
            assert downs(again, "nyc-pe-1", "bgp") == [f"bgp:{peer}"], "configured to work"
            latest = samples(listener, SWITCH)[-1]
            assert (latest.fields["ports_down"], latest.fields["ports_down_baseline"]) == (8, 7)
