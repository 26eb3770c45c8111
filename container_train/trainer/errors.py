"""Client errors: mistakes in the job's input that its user must fix.

They subclass the training toolkit's ClientError, so `train` writes the message as
a one-line reason to <base>/output/failure (SageMaker shows it as FailureReason)
and exits non-zero, while bugs keep their traceback.
"""

from sagemaker_training.errors import ClientError as ToolkitClientError


class ClientError(ToolkitClientError):
    """A problem with the job's data, hyperparameters or environment, stated in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(" ".join(reason.split()))


class JobFailedError(ClientError):
    """A worker of a distributed job failed: the message is the job's one-line reason."""
