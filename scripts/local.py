#!/usr/bin/env python3
"""`python scripts/local.py ...`: the local launch CLI (`launch.local.cli`, also `imgcls-local`)."""

import sys

try:
    from launch.local.cli import main
except ModuleNotFoundError as missing:
    sys.exit(f"{missing}: run `make venv` and use .venv/bin/python")

if __name__ == "__main__":
    sys.exit(main())
