"""docs/architecture.md's import rules, enforced by reading every module's imports (AST)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# (package or module prefix, forbidden import prefixes) — the "must not import" column of the page.
RULES: list[tuple[str, tuple[str, ...]]] = [
    ("schemas", ("torch", "ray", "kafka", "transformers", "redis", "serve_app", "workers", "deploy")),
    ("serve_app.engine", ("ray", "kafka", "workers", "serve_app.scoring", "redis")),
    ("serve_app.scoring", ("torch", "transformers", "kafka", "workers")),
    ("serve_app", ("workers", "deploy")),
    ("workers", ("torch", "transformers", "serve_app.engine", "serve_app.deployment", "serve_app.http_api", "deploy")),
]
# Deliberate, documented exceptions: (module, import) — the CLI subcommands that run an engine.
ALLOWED = {
    ("workers.runner", "serve_app.engine"),  # --direct-engine: loads the model in-process on request
}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for pkg in ("schemas", "serve_app", "workers", "deploy"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            name = ".".join(p for p in rel.parts if p != "__init__")
            out.append((name, path))
    return out


def _imports(name: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = pkg[: len(pkg) - (node.level - 1)]
                found.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                found.add(node.module)
    return found


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_import_rules_hold():
    problems = []
    for name, path in _modules():
        for imported in _imports(name, path):
            for owner, forbidden in RULES:
                if not _matches(name, owner):
                    continue
                for bad in forbidden:
                    if _matches(imported, bad) and (name, bad) not in ALLOWED:
                        problems.append(f"{name} imports {imported} (rule: {owner} must not import {bad})")
    assert not problems, "\n".join(sorted(set(problems)))


def test_the_rule_checker_can_fail(tmp_path):
    bad = tmp_path / "mod.py"
    bad.write_text("import torch\nfrom workers.worker import Worker\nfrom .engine import x\n")
    assert _imports("serve_app.scoring.mod", bad) == {"torch", "workers.worker", "serve_app.scoring.engine"}


@pytest.mark.parametrize(
    "module", ["workers.worker", "workers.runner", "workers.demo", "workers.consumer_deployment", "serve_app.scoring"]
)
def test_worker_side_imports_load_no_torch(module):
    code = f"import sys, {module}; bad = [m for m in ('torch', 'transformers') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{module} loaded {proc.stdout.strip()} {proc.stderr[-2000:]}"


def test_architecture_page_names_every_module():
    page = (ROOT / "docs" / "architecture.md").read_text()
    missing = [name for name, path in _modules() if path.name != "__init__.py" and f"{name.split('.')[-1]}" not in page]
    assert not missing, f"docs/architecture.md does not mention: {missing}"
