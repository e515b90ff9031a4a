"""Simulated SNMP device fleets for tests, demos and benchmarks."""
