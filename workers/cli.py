"""The ``rerank-stream`` command: one entry point, one subcommand per process kind.

Subcommands live next to the code they run; each module exposes ``add_arguments(parser)``
and ``run(args) -> int``. They are imported lazily so ``rerank-stream schema`` does not pay
for torch or Ray.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from schemas.settings import ConfigError

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("serve_app.runtime", "Start Ray and the Serve app (reranker replicas + HTTP API)."),
    "worker": ("workers.runner", "Run the Kafka worker (standalone, or N Ray actors with --ray)."),
    "consumers": (
        "workers.consumer_deployment",
        "Cluster mode: Kafka consumers as Ray Serve replicas that scale on the group's lag (joins serve.ray_address).",
    ),
    "dlq": ("workers.redrive", "Dead letters: list, show, replay after a fix (dry run unless --yes)."),
    "demo": ("workers.demo", "End-to-end demo on local Kafka + Redis + Ray Serve."),
    "schema": ("schemas.export", "Write the JSON Schemas of the wire models."),
    "config": ("schemas.config_cli", "Print the effective configuration or its documentation table."),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="rerank-stream", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    module = None
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # import only the module of the command being run
            module = importlib.import_module(module_name)
            module.add_arguments(p)
    args = parser.parse_args(argv)
    assert module is not None
    try:
        return int(module.run(args) or 0)
    except ConfigError as exc:  # an operator's mistake, not a bug: no traceback, exit 2 like a usage error
        for problem in exc.problems:
            print(f"rerank-stream {args.command}: configuration error: {problem}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
