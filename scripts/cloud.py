#!/usr/bin/env python3
"""`python scripts/cloud.py ...`: the cloud launch CLI (`launch.cloud.cli`, also `imgcls-cloud`)."""

import sys

try:
    from launch.cloud.cli import main
except ModuleNotFoundError as missing:
    sys.exit(f"{missing}: run `make venv` and use .venv/bin/python")

if __name__ == "__main__":
    sys.exit(main())
