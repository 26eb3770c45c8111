"""The code is installed packages with entry points: no path tricks, no import cycles, and
each package imports only what its layer may."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# Package -> the folder that holds it.
PACKAGES = {
    "model_artifact": REPO_ROOT / "artifact",
    "trainer": REPO_ROOT / "container_train",
    "serving": REPO_ROOT / "container_serve",
    "launch": REPO_ROOT / "scripts",
}
# What each package may import of this project (the images ship the first three apart).
MAY_IMPORT = {
    "model_artifact": set(),
    "trainer": {"model_artifact"},
    "serving": {"model_artifact"},
    "launch": {"model_artifact", "trainer", "serving"},
}
COMMANDS = {
    "train": "trainer.cli:main",
    "serve": "serving.server:main",
    "export-onnx": "trainer.export_cli:main",
    "imgcls-local": "launch.local.cli:main",
    "imgcls-cloud": "launch.cloud.cli:main",
}


def modules_of(package: str) -> dict[str, Path]:
    root = PACKAGES[package]
    return {
        ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): path
        for path in (root / package).rglob("*.py")
    }


def imports_of(path: Path) -> set[str]:
    """Project modules imported anywhere in the module: at module level and inside
    functions alike (a lazy import closes a cycle as surely as any other)."""
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:  # the project uses no relative ones
            imported.add(node.module)
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in imported if name.split(".")[0] in PACKAGES}


def function_level_imports(path: Path) -> set[str]:
    """Modules imported inside a function or method of the module (type-checking blocks
    are not imports at run time)."""
    imported: set[str] = set()
    for function in ast.walk(ast.parse(path.read_text())):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
    return imported


def test_commands_are_entry_points_of_the_installed_packages() -> None:
    declared = {
        (ep.name, ep.value) for ep in entry_points(group="console_scripts") if ep.name in COMMANDS
    }
    assert set(COMMANDS.items()) <= declared
    # sagemaker-training declares a `train` too; this project's, installed after it, wins.
    for command, target in COMMANDS.items():
        module, _, function = target.partition(":")
        script = Path(sys.executable).with_name(command).read_text()
        assert f"from {module} import {function}" in script, command


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_their_layer(package: str) -> None:
    for module, path in modules_of(package).items():
        others = {name.split(".")[0] for name in imports_of(path)} - {package}
        assert others <= MAY_IMPORT[package], f"{module} imports {others}"


def test_no_import_cycles() -> None:
    modules = {name: path for package in PACKAGES for name, path in modules_of(package).items()}
    graph = {
        name: {imported for imported in imports_of(path) if imported in modules} - {name}
        for name, path in modules.items()
    }
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        assert name not in visiting, f"import cycle: {' -> '.join([*visiting, name])}"
        if name in done:
            return
        visiting.append(name)
        for imported in sorted(graph[name]):
            visit(imported)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def test_no_sys_path_edits_outside_the_tests() -> None:
    folders = [*PACKAGES.values(), REPO_ROOT / "bench"]
    edits = [
        path.relative_to(REPO_ROOT).as_posix()
        for folder in folders
        for path in folder.rglob("*.py")
        if "sys.path" in path.read_text()
    ]
    assert edits == []


@pytest.mark.parametrize("package", ["model_artifact", "trainer", "serving"])
def test_every_subpackage_is_declared_for_the_images(package: str) -> None:
    """The images install these packages with pip from their folders (not editable, as in
    the tests): a subpackage missing from setuptools' list is missing in the image."""
    pyproject = tomllib.loads((PACKAGES[package] / "pyproject.toml").read_text())
    declared = set(pyproject["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(PACKAGES[package]).parts)
        for init in (PACKAGES[package] / package).rglob("__init__.py")
    }
    assert found == declared


# The trainer's imports inside functions, each with why it cannot wait at the top of its
# module; any other belongs at the top (docs/architecture.md, Training).
TRAINER_LAZY_IMPORTS = {
    "trainer.cli": {
        "sagemaker_training": "the toolkit reads, at import time, the environment main sets"
    },
    "trainer.debugger": {"smdebug.pytorch": "optional: absent outside the training image"},
    "trainer.job": {
        "trainer.onnx_export": "onnxruntime's quantization tools take about 1 s; trials skip ONNX"
    },
    "trainer.history": {
        "matplotlib": "only at the end of a job; a trial's start-up never pays for it",
        "matplotlib.pyplot": "imported after matplotlib.use('Agg') selects a headless backend",
        "matplotlib.ticker": "as matplotlib.pyplot",
    },
    "trainer.evaluation_plots": {
        "matplotlib": "only at the end of a job; a trial's start-up never pays for it",
        "matplotlib.pyplot": "imported after matplotlib.use('Agg') selects a headless backend",
    },
    "trainer.model": {
        "torchvision.models": "about 3 s; a trial that finds the backbone cached never needs it"
    },
}


def test_the_trainer_imports_inside_functions_only_what_must_wait() -> None:
    found = {module: function_level_imports(path) for module, path in modules_of("trainer").items()}
    lazy = {module: imported for module, imported in found.items() if imported}
    assert lazy == {module: set(why) for module, why in TRAINER_LAZY_IMPORTS.items()}
