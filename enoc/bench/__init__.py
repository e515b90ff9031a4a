"""Benchmarks: figures anyone can reproduce with `enoc bench`."""
