"""`train`: the command SageMaker runs in the training image (`docker run IMAGE train`).

It is the training toolkit's own `train`, pointed at this package: the toolkit reads
the platform's files, calls `trainer.job:main`, and turns a ClientError into a one-line
<base>/output/failure and a non-zero exit.
"""

from __future__ import annotations

import os

from trainer.contract import TRAINING_MODULE, TRAINING_MODULE_ENV, training_paths


def main() -> None:
    os.environ.setdefault(TRAINING_MODULE_ENV, TRAINING_MODULE)
    # The toolkit writes output/failure without creating the folder; when that write
    # fails, the job exits 0 as if it had succeeded. SageMaker creates it; a bare run may not.
    training_paths().output_dir.mkdir(parents=True, exist_ok=True)
    # Imported once the environment is set: the toolkit reads it at import time.
    from sagemaker_training import trainer  # noqa: PLC0415

    trainer.train()
