"""Launch the image classifier on Amazon SageMaker: upload, tune, train, report, deploy, invoke.

    python scripts/cloud.py upload --data DIR
    python scripts/cloud.py tune
    python scripts/cloud.py train --tuning-job NAME
    python scripts/cloud.py report --job NAME
    python scripts/cloud.py deploy --job NAME [--async | --serverless | --multi-model]
    python scripts/cloud.py invoke --endpoint NAME IMAGES...
    python scripts/cloud.py cleanup --endpoint NAME
    python scripts/cloud.py transform --job NAME --input S3_URI_OR_DIR
    python scripts/cloud.py transform-report --job TRANSFORM_JOB

Uses the SageMaker Python SDK 2.x with this project's images (from build/images.json,
which build_and_push.sh writes; --train-image/--serve-image override). AWS settings come
from flags, then the environment (AWS_DEFAULT_REGION, AWS_PROFILE, SAGEMAKER_ROLE,
SAGEMAKER_BUCKET, SAGEMAKER_PREFIX), then defaults; AWS_ENDPOINT_URL points everything
at another endpoint (the tests use a local emulator).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from botocore.exceptions import BotoCoreError, ClientError

from launch.cloud.commands import endpoints, report, training, transform, upload
from launch.cloud.commands.common import Aws, Table
from launch.cloud.settings import CloudError
from launch.options import USAGE_ERROR_STATUS, UsageError

# In the order `--help` lists them: the order of the workflow.
COMMANDS: Table = [
    *upload.COMMANDS,
    *training.COMMANDS,
    *report.COMMANDS,
    *endpoints.COMMANDS,
    *transform.COMMANDS,
]
BY_NAME = {command.name: command for command in COMMANDS}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        subparser = commands.add_parser(command.name, help=command.help, description=command.help)
        for add_flags in command.flags:
            add_flags(subparser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Before the SDK is imported: one of its modules sets the root logger to INFO otherwise.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    command = BY_NAME[args.command]
    try:
        plan = command.plan(args)  # every check the flags allow, before any AWS call
        return command.run(plan, Aws(args.region, args.bucket, args.prefix))
    except UsageError as error:  # what the job would refuse: refused before it starts
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR_STATUS
    except CloudError as error:
        print(f"error: {error}", file=sys.stderr)
    except (BotoCoreError, ClientError) as error:  # AWS said no: one line, not a traceback
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
    return 1
