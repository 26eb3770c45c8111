"""The manual's generated tables match the definitions they are generated from."""

from __future__ import annotations

import shutil
from dataclasses import fields
from pathlib import Path

import pytest

from launch.doc_tables import GENERATOR, TABLES, Table, committed, rewrite
from serving import contract
from serving.contract import DEFAULT_GPU_MAX_BATCH_DELAY_MS, MAX_BATCH_DELAY_ENV
from trainer.hyperparameters import Hyperparameters

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("table", TABLES, ids=[table.name for table in TABLES])
def test_the_committed_table_is_the_generated_one(table: Table) -> None:
    assert committed(table, REPO_ROOT) == table.render(), (
        f"the {table.name} table in {table.page} is stale: run `{GENERATOR}`"
    )


def test_every_hyperparameter_says_what_it_means() -> None:
    unexplained = [f.name for f in fields(Hyperparameters) if not f.metadata["help"]]
    assert unexplained == [], "give these hp(..., help=...) in trainer/hyperparameters.py"


def test_every_variable_a_user_may_set_has_its_row() -> None:
    declared = {value for name, value in vars(contract).items() if name.endswith("_ENV")} - set(
        contract.WORKER_ONLY_ENVS
    )
    documented = [name for setting in contract.SETTINGS for name in setting.names]
    assert len(documented) == len(set(documented))
    assert set(documented) == declared, "add a Setting to SETTINGS in serving/contract.py"


def test_the_tables_hold_each_definition() -> None:
    hyperparameters = TABLES[0].render()
    for field in fields(Hyperparameters):
        assert f"| `{field.name}` |" in hyperparameters
    settings = TABLES[1].render()
    row = next(line for line in settings.splitlines() if f"`{MAX_BATCH_DELAY_ENV}`" in line)
    assert f"{DEFAULT_GPU_MAX_BATCH_DELAY_MS} on a GPU" in row


def test_a_stale_table_is_rewritten_and_the_rest_of_the_page_kept(tmp_path: Path) -> None:
    table = TABLES[1]
    page = tmp_path / table.page
    page.parent.mkdir(parents=True)
    shutil.copy(REPO_ROOT / table.page, page)
    original = page.read_text()
    page.write_text(original.replace("| `JAVA_HOME` |", "| `JAVA_HOME_TYPO` |"))
    assert committed(table, tmp_path) != table.render()
    assert rewrite(table, tmp_path) is True
    assert page.read_text() == original
    assert rewrite(table, tmp_path) is False


def test_a_page_without_its_markers_is_refused(tmp_path: Path) -> None:
    table = TABLES[0]
    (tmp_path / "docs").mkdir()
    (tmp_path / table.page).write_text("# Training\n")
    with pytest.raises(ValueError, match="has no block marked"):
        rewrite(table, tmp_path)
