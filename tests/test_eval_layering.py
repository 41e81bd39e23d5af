"""The evaluation layer must not import training or method code."""

from __future__ import annotations

import ast
from pathlib import Path

import miniunlearn.evaluation as evaluation

# leaf utilities that import nothing of the package (progress: one progress-bar style)
ALLOWED_INTERNAL = {"miniunlearn.errors", "miniunlearn.progress"}


def test_evaluation_imports_only_allowed_modules() -> None:
    package_dir = Path(evaluation.__file__).parent
    for path in sorted(package_dir.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:  # relative: must stay inside the evaluation package
                    assert node.level == 1, f"{path.name}: relative import leaves the package"
                    continue
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.split(".")[0] == "miniunlearn":
                    assert name in ALLOWED_INTERNAL, f"{path.name} imports {name}"
