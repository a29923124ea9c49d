"""The layout a newcomer relies on: one import namespace, dependencies that point one way
(server -> indexer -> detectors -> models), no research code in the service, a wheel that
carries the service alone, and modules small enough to read."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Each service package (folder -> import name) and the packages it may import.
LAYERS = {
    "server": {"server", "indexer", "detectors", "models"},
    "indexer": {"indexer", "detectors", "models", "migrations"},
    "detectors": {"detectors", "models"},
    "models": {"models"},
    "migrations": {"migrations"},
}
RESEARCH = {"training", "bench"}
#: Libraries of the optional extras: the service must run without them.
EXTRAS_ONLY = {"skimage", "sklearn", "matplotlib", "pdqhash", "pillow_jxl"}
MAX_LINES = 400


def service_modules() -> list[Path]:
    return sorted(p for folder in LAYERS for p in (ROOT / folder).rglob("*.py") if "api" not in p.parts)


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """(module, at top level) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "origin_id" else [f"origin_id.{a.name}" for a in node.names]
            found += [(name, id(node) in top) for name in names]
    return found


def test_service_imports_point_one_way_and_never_into_research_code():
    wrong = []
    for path in service_modules():
        layer = path.relative_to(ROOT).parts[0]
        for name, _ in imports_of(path):
            head = name.split(".")[0]
            if head in RESEARCH or head in LAYERS:
                wrong.append(f"{path.relative_to(ROOT)}: imports {name} (use origin_id.*; no research code)")
            elif head == "origin_id":
                package = name.split(".")[1] if "." in name else ""
                if package not in LAYERS[layer]:
                    wrong.append(f"{path.relative_to(ROOT)}: {layer} must not import {name}")
            elif head in EXTRAS_ONLY:
                wrong.append(f"{path.relative_to(ROOT)}: imports {name}, which only an optional extra installs")
    assert not wrong, "\n".join(wrong)


def test_service_modules_import_no_cycle():
    """Among top-level imports (what runs when a module is first imported)."""
    names = {}
    for path in service_modules():
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(("origin_id", *parts[:-1]) if parts[-1] == "__init__" else ("origin_id", *parts))
        names[module] = path
    graph = {module: {name for name, top in imports_of(path) if top and name in names}
             for module, path in names.items()}
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for dep in graph[module]:
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join([*trail, module, dep]))
            if dep not in state:
                visit(dep, [*trail, module])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [])


def test_no_service_or_training_module_is_over_the_size_a_newcomer_reads():
    paths = service_modules() + sorted((ROOT / "training").rglob("*.py"))
    long = {str(p.relative_to(ROOT)): n for p in paths if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


@pytest.mark.slow  # builds the wheel
def test_the_wheel_carries_the_service_alone(tmp_path):
    # Built from a copy: setuptools leaves a build/ folder beside the sources it builds.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", ".data", "build", "*.egg-info",
                                                                "__pycache__", ".pytest_cache", ".ruff_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("origin_id-*.whl")
    files = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in files}
    assert tops == {"origin_id", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    packages = {name.split("/")[1] for name in files if name.startswith("origin_id/")}
    assert packages == {"server", "indexer", "detectors", "models", "migrations"}
    for needed in ("origin_id/indexer/default_model/transform.safetensors",
                   "origin_id/indexer/default_model/vae/config.json",
                   "origin_id/indexer/default_model/inpainting/detector.safetensors",
                   "origin_id/migrations/versions/0001_initial.py",
                   "origin_id/server/api/origin/v1/origin_pb2.py"):
        assert needed in files, needed
