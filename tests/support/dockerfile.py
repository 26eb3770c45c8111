"""Reading Dockerfiles and .dockerignore as the engine does, for static checks of the images."""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

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

    def stage(self, name: str) -> list[Instruction]:
        """The instructions of the stage `FROM ... AS name`."""
        [index] = [
            i.stage
            for i in self.instructions
            if i.keyword == "FROM" and i.arguments.lower().endswith(f" as {name}")
        ]
        return [instruction for instruction in self.instructions if instruction.stage == index]

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
    return sorted(path for path in directory.rglob("*.py") if "__pycache__" not in path.parts)
