"""SNMP encoding shared by the agent's poller and the simulator: BER and the USM (RFC 3414)."""
