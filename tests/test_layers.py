"""The import rule of the package's layers (docs/design.md, "Layers"): imports point down.

cli -> {pipeline, training, evaluation} -> {io, ops, models} -> {color, device, errors};
training may use pipeline (validation colorizes through the Colorizer); no module imports the
package face ``celpaint`` itself; no import of celpaint's own modules inside a function outside
cli/ (where lazy imports keep ``--help`` fast).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import celpaint

LAYERS = {
    "cli": 4,
    "pipeline": 3,
    "training": 3,
    "evaluation": 3,
    "io": 2,
    "ops": 2,
    "models": 2,
    "color": 1,
    "device": 1,
    "errors": 1,
}
SIDEWAYS = {("training", "pipeline")}


def _room(module: str, package: str) -> str | None:
    parts = module.split(".")
    if parts[0] != package:
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, module: str):
    """Yield ``(line, imported module, inside a function)`` for every import in ``path``."""
    tree = ast.parse(path.read_text())
    inner = {
        id(node)
        for function in ast.walk(tree)
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
        for node in ast.walk(function)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                keep = len(base) - node.level + (1 if path.name == "__init__.py" else 0)
                targets = [".".join(base[:keep] + ([node.module] if node.module else []))]
            else:
                targets = [node.module or ""]
        else:
            continue
        for target in targets:
            yield node.lineno, target, id(node) in inner


def layer_violations(root: Path) -> list[str]:
    """Every import under the package folder ``root`` that breaks the rule, one line each."""
    package = root.name
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root.parent).with_suffix("")
        parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
        module = ".".join(parts)
        room = _room(module, package)
        if room == "__init__" or room == "__main__":
            continue
        if room not in LAYERS:
            found.append(f"{path.name}: {room}/ is not a layer")
            continue
        for line, target, inside_function in _imports(path, module):
            other = _room(target, package)
            if other is None or other == room:
                continue
            where = f"{relative}:{line} imports {target}"
            if inside_function and room != "cli":
                found.append(f"{where} inside a function")
            if other == "__init__":
                found.append(f"{where}: the package face, from below")
            elif other in LAYERS and (
                LAYERS[other] > LAYERS[room]
                or (LAYERS[other] == LAYERS[room] and (room, other) not in SIDEWAYS)
            ):
                found.append(f"{where}: {room} may not import {other}")
    return found


def test_celpaint_imports_point_down():
    assert layer_violations(Path(celpaint.__file__).parent) == []


@pytest.mark.parametrize(
    "room, source, complaint",
    [
        ("ops/bad.py", "from fake.pipeline import api\n", "ops may not import pipeline"),
        ("io/bad.py", "import fake.ops.flow\n", "io may not import ops"),
        ("color/bad.py", "from fake.errors import InputError\n", "color may not import errors"),
        ("training/bad.py", "from fake.evaluation import compare\n", "may not import evaluation"),
        ("models/bad.py", "def f():\n    from fake.errors import X\n", "inside a function"),
        ("pipeline/bad.py", "from fake import colorize\n", "the package face"),
        ("misc/bad.py", "import os\n", "misc/ is not a layer"),
    ],
)
def test_the_check_catches_each_kind_of_violation(tmp_path, room, source, complaint):
    root = tmp_path / "fake"
    for folder in ("ops", "io", "color", "training", "models", "pipeline", "misc", "cli"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
    # Allowed: downward, sideways training -> pipeline, lazy imports in cli/.
    (root / "cli" / "ok.py").write_text("def f():\n    from fake.pipeline import api\n")
    (root / "training" / "ok.py").write_text("from fake.pipeline import colorizer\n")
    (root / "pipeline" / "ok.py").write_text("from fake.io import s\nfrom fake.color import c\n")
    assert [line for line in layer_violations(root) if "misc" not in line] == []
    (root / room).write_text(source)
    assert any(complaint in line for line in layer_violations(root))
