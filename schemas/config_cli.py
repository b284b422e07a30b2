"""``rerank-stream config``: show the effective configuration, or the README's table of options."""

from __future__ import annotations

import argparse
import json

from schemas.settings import load_settings, settings_markdown


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--markdown", action="store_true", help="Print the documentation table of every option.")


def run(args: argparse.Namespace) -> int:
    if args.markdown:
        print(settings_markdown(), end="")
    else:
        print(json.dumps(load_settings().model_dump(mode="json"), indent=2))
    return 0
