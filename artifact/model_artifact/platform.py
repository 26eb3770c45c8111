"""What SageMaker's training and hosting contracts share: where the platform's folder is.

Both containers lay their files out under one base folder, /opt/ml on SageMaker; the
toolkits (and this project's contracts) let SAGEMAKER_BASE_DIR point it elsewhere, so a
local run or a test can use any folder laid out the same way.
"""

from __future__ import annotations

BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"
DEFAULT_BASE_DIR = "/opt/ml"
