"""The manual's tables that code defines, generated from their definitions.

Each table sits in a page between two markers,

    <!-- BEGIN generated: NAME (python scripts/gen_docs.py) -->
    <!-- END generated: NAME -->

and `python scripts/gen_docs.py` rewrites what lies between them; a unit test fails when
a committed table differs from what its definition renders.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, fields
from pathlib import Path
from typing import Any

from serving.contract import SETTINGS
from trainer.hyperparameters import Hyperparameters, allowed_values

GENERATOR = "python scripts/gen_docs.py"


@dataclass(frozen=True)
class Table:
    name: str
    page: str  # relative to the repository root
    render: Callable[[], str]


def _shown_default(field: Field[Any]) -> str:
    """A default as a user writes it: `true`, `1e-08`, or what a computed default is."""
    if field.default is MISSING:
        return (getattr(field.default_factory, "__doc__", None) or "computed").strip()
    if isinstance(field.default, bool):
        return str(field.default).lower()
    if isinstance(field.default, float):
        return f"{field.default:g}"
    return str(field.default)


def hyperparameters_table() -> str:
    """Every hyperparameter: its default, what it accepts, what it means; then which ones
    change only how a job runs (a checkpoint resumes across them)."""
    rows = ["| name | default | accepts | meaning |", "| --- | --- | --- | --- |"]
    for field in fields(Hyperparameters):
        accepts = allowed_values(field.name)
        rows.append(
            f"| `{field.name}` | {_shown_default(field)} | {accepts} | {field.metadata['help']} |"
        )
    pace = [f"`{f.name}`" for f in fields(Hyperparameters) if not f.metadata["trajectory"]]
    note = (
        f"{', '.join(pace[:-1])} and {pace[-1]} change how fast, long or verbosely a job runs, "
        "not what it learns: a checkpoint is resumed when only these differ."
    )
    return "\n".join(rows) + "\n\n" + note


def serving_settings_table() -> str:
    """Every variable `serve` reads from its environment, with its default."""
    rows = ["| variable | default | |", "| --- | --- | --- |"]
    for setting in SETTINGS:
        names = ", ".join(f"`{name}`" for name in setting.names)
        rows.append(f"| {names} | {setting.default} | {setting.meaning} |")
    return "\n".join(rows)


TABLES = (
    Table("hyperparameters", "docs/training.md", hyperparameters_table),
    Table("serving settings", "docs/serving.md", serving_settings_table),
)


def _block(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"(<!-- BEGIN generated: {re.escape(name)} [^\n]*-->\n)(.*?)(<!-- END generated: "
        rf"{re.escape(name)} -->)",
        re.DOTALL,
    )


def begin_marker(name: str) -> str:
    return f"<!-- BEGIN generated: {name} ({GENERATOR}) -->"


def committed(table: Table, root: Path) -> str:
    """The table as the page holds it; a page without the markers is a ValueError."""
    found = _block(table.name).search((root / table.page).read_text())
    if found is None:
        raise ValueError(f"{table.page} has no block marked {begin_marker(table.name)}")
    return found.group(2).removesuffix("\n")


def rewrite(table: Table, root: Path) -> bool:
    """Put the rendered table between its markers; True when the page changed."""
    page = root / table.page
    text = page.read_text()
    committed(table, root)  # the markers are there
    updated = _block(table.name).sub(
        lambda found: f"{found.group(1)}{table.render()}\n{found.group(3)}", text
    )
    if updated == text:
        return False
    page.write_text(updated)
    return True
