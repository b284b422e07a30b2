"""Benchmarks and load generators; each prints one JSON object as its last line."""
