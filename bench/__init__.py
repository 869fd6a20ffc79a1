"""Benchmarks and load tests: scripts that print figures, never timed tests."""
