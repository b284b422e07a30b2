"""Fixture plugins of the suite, one module per area."""

pytest_plugins = [
    "tests.fixtures_infra",
    "tests.fixtures_serve",
    "tests.fixtures_worker",
    "tests.fixtures_models",
]
