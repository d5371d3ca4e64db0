"""The house rules of the package, checked on every run of the tests.

* Every import points down the layers declared in pyproject.toml (``[tool.importlinter]``): commands ->
  steps -> train/api -> models/data/evaluation -> config -> mechanisms; steps, commands and networks
  are independent of each other. import-linter reads every import statement, function-local ones
  included, so a circle cannot hide inside a function.
* No module of the package is over 500 lines.
* Function-local imports are only for optional or heavy dependencies that most users never need.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

from conftest import REPO

PACKAGE = REPO / "titok_jax"
MAX_LINES = 500
# Imports that may stay inside a function: optional dependencies (torch, TensorFlow datasets, the
# Hugging Face hub, scikit-image for the bundled demo photographs).
LAZY_OK = {"torch", "tensorflow_datasets", "huggingface_hub", "skimage", "tensorflow"}


def test_import_contracts_hold():
    cmd = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
           "sys.exit(lint_imports_command())"]  # fmt: skip
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert "broken" not in p.stdout.split("Contracts:")[-1].replace("0 broken", "")


def test_no_module_over_500_lines():
    long = {}
    for root, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(root, f)
                with open(path) as fh:
                    n = sum(1 for _ in fh)
                if n > MAX_LINES:
                    long[os.path.relpath(path, REPO)] = n
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_function_local_imports_are_only_optional_dependencies():
    found = []
    for root, _, files in os.walk(PACKAGE):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(root, f)
            tree = ast.parse(open(path).read())
            for fn in ast.walk(tree):
                if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(fn):
                    if isinstance(node, ast.Import):
                        names = [a.name for a in node.names]
                    elif isinstance(node, ast.ImportFrom):
                        names = [node.module or ""]
                    else:
                        continue
                    for name in names:
                        if name.split(".")[0] not in LAZY_OK:
                            found.append(f"{os.path.relpath(path, REPO)}:{node.lineno} {name}")
    assert not found, "function-local imports of required packages (move them to the top):\n" + "\n".join(found)
