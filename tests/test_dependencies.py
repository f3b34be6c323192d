"""pyproject.toml's dependencies against what the code imports: every declared package is
imported by the package, and nothing the package (or its scripts and tests) imports is missing."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
# Distributions whose import name differs from their name.
IMPORT_NAMES = {
    "opencv-python-headless": "cv2",
    "scikit-image": "skimage",
    "pillow": "PIL",
    "imageio-ffmpeg": "imageio_ffmpeg",
}
LOCAL = {"celpaint", "tests", "build_dataset"}


def _import_name(requirement: str) -> str:
    distribution = re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0).lower()
    return IMPORT_NAMES.get(distribution, distribution.replace("-", "_"))


def _declared(extra: str | None = None) -> tuple[set[str], set[str]]:
    """Import names of the dependencies, and of the optional ones (every extra, or one)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = project["optional-dependencies"]
    chosen = groups.values() if extra is None else [groups[extra]]
    extras = {_import_name(r) for group in chosen for r in group}
    return {_import_name(r) for r in project["dependencies"]}, extras


def _imports(folder: Path) -> dict[str, set[str]]:
    """Top-level modules imported anywhere in ``folder`` (functions included), outside the
    standard library: module -> files importing it."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                # A script beside the importing one (benchmarks share helpers) is not a package.
                sibling = (path.parent / f"{top}.py").exists()
                if top not in sys.stdlib_module_names and top not in LOCAL and not sibling:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_the_package_imports_exactly_its_dependencies():
    # The ONNX Runtime backend is optional: the package imports it only when asked for it.
    required, optional = _declared("onnx")
    imported = _imports(ROOT / "celpaint")
    undeclared = {
        name: files for name, files in imported.items() if name not in required | optional
    }
    assert not undeclared, f"imported but not in pyproject's dependencies: {undeclared}"
    unused = required - set(imported)
    assert not unused, f"declared but never imported by celpaint/: {sorted(unused)}"


def test_scripts_benchmarks_and_tests_import_only_declared_packages():
    required, extras = _declared()
    for folder in ("scripts", "benchmarks", "tests"):
        undeclared = {
            name: files
            for name, files in _imports(ROOT / folder).items()
            if name not in required | extras
        }
        assert not undeclared, f"{folder}/ imports undeclared packages: {undeclared}"
