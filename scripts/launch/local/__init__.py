"""The containers' commands as plain processes on this machine, without Docker or AWS.

`jobdir` lays folders out like /opt/ml, `processes` runs `train` and `serve` in them,
`client` talks HTTP to a running `serve`, `tuning` runs many training jobs, `cli` is
`scripts/local.py`.
"""
