"""``rerank-stream schema``: export the wire models as JSON Schema files (kept in docs/schemas)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from schemas.messages import WIRE_MODELS

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"


def render_all() -> dict[str, str]:
    """File name -> JSON Schema text, one file per wire model."""
    return {
        f"{name}.schema.json": json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"
        for name, model in WIRE_MODELS.items()
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR, help="Directory to write into (default docs/schemas).")
    parser.add_argument("--check", action="store_true", help="Exit 1 when the files on disk differ from the models.")


def run(args: argparse.Namespace) -> int:
    stale = []
    for name, text in render_all().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    if stale:
        print("JSON Schemas out of date (run `rerank-stream schema`): " + ", ".join(stale))
        return 1
    return 0
