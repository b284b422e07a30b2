"""Fixture plugins of the suite, one module per area."""

pytest_plugins = [
    "tests.fixtures_infra",
]
