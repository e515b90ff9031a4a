"""Test support outside the runtime package: loopback servers and the fault drills."""
