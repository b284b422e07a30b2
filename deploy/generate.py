"""Writes every generated deployment file, or checks that they are current (``--check``).

One list, so ``make manifests`` and the drift test agree on what is generated and from what:
``deploy/serve_config.yaml`` (default settings, CPU) and the Kubernetes manifests (the settings of
``deploy/k8s/config.yaml``) both come from ``serve_app.app.serve_config``; the Grafana dashboard
from ``deploy/dashboard.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deploy.dashboard import DASHBOARD_FILE, render_dashboard
from deploy.manifests import CONSUMERS_FILE, RAYSERVICE_FILE, k8s_settings, render_consumers, render_rayservice
from serve_app.app import SERVE_CONFIG, render_serve_config


def rendered() -> dict[Path, str]:
    """Path -> the text the generator makes for it now."""
    settings = k8s_settings()
    return {
        SERVE_CONFIG: render_serve_config(),
        RAYSERVICE_FILE: render_rayservice(settings),
        CONSUMERS_FILE: render_consumers(settings),
        DASHBOARD_FILE: render_dashboard(),
    }


def stale() -> list[Path]:
    """Generated files whose committed text differs from what the generator makes now."""
    return [path for path, text in rendered().items() if not path.is_file() or path.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Exit 1 naming the stale files; write nothing.")
    args = parser.parse_args(argv)
    if args.check:
        paths = stale()
        for path in paths:
            print(f"stale: {path} (run `make manifests`)", file=sys.stderr)
        return 1 if paths else 0
    for path, text in rendered().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
