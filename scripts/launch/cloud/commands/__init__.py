"""The commands of `scripts/cloud.py`, one module per group: each holds its commands' flags,
their plans (the command line checked and turned into plain data, before any AWS call) and
their handlers (which resolve the AWS target and turn the plan into calls), side by side.

`common` holds what several commands share; `launch.cloud.cli` lists the commands.
"""
