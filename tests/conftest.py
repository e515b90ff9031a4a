"""Shared fixtures: real servers on loopback come from tests/fixtures_servers.py."""

pytest_plugins = ["fixtures_servers"]
