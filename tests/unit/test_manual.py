"""The user manual speaks of the product: no page names where the test suite keeps its data."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_DATA_PATH = "../shared"  # where the test suite looks for its photos by default


def test_no_page_names_the_test_suites_data_folder() -> None:
    pages = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    naming = [page.name for page in pages if TEST_DATA_PATH in page.read_text()]
    assert naming == []
