#!/usr/bin/env python3
"""`python scripts/gen_docs.py`: regenerate the manual's tables from the code that defines
them (`launch.doc_tables`): the hyperparameters and the serving settings."""

import sys
from pathlib import Path

try:
    from launch.doc_tables import TABLES, rewrite
except ModuleNotFoundError as missing:
    sys.exit(f"{missing}: run `make venv` and use .venv/bin/python")

REPO_ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    for table in TABLES:
        changed = rewrite(table, REPO_ROOT)
        print(f"{table.page}: {table.name} {'rewritten' if changed else 'unchanged'}")
