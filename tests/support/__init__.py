"""Test-only helpers shared by tests and benchmarks; nothing under serve_app/ imports them."""
