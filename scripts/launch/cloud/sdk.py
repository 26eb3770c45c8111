"""Which SageMaker Python SDK generation the launch CLI drives: 2.x through `sdk2`, 3.x
through `sdk3`, each offering the same functions over the same plans.

The choice reads the installed distributions' versions (no SDK import, which takes
seconds): `sagemaker` 2.x is SDK 2.x; SDK 3.x is `sagemaker-core` 2.x, which the meta-package
`sagemaker` 3.x installs and which is all the launch tools need of 3.x. Anything else is
refused with one line saying what to install.
"""

from __future__ import annotations

import functools
import importlib.metadata
from dataclasses import dataclass
from types import ModuleType

from launch.cloud import sdk2, sdk3
from launch.cloud.settings import CloudError

SDK2_DISTRIBUTION, SDK2_MAJOR = "sagemaker", 2
SDK3_DISTRIBUTION, SDK3_MAJOR = "sagemaker-core", 2  # sagemaker-core 2.x is SDK 3.x's core
INSTALL = (
    "install SDK 3.x (pip install -r requirements-launch-sdk3.txt) or 2.x "
    "(pip install -r requirements-launch-sdk2.txt)"
)


@dataclass(frozen=True)
class Generation:
    name: str  # "2.x" or "3.x"
    distribution: str
    version: str
    calls: ModuleType  # sdk2 or sdk3

    def __str__(self) -> str:
        return f"SageMaker Python SDK {self.name} ({self.distribution} {self.version})"


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def major(version: str) -> int:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else -1


def choose(sagemaker: str | None, core: str | None) -> Generation:
    """The generation for the installed `sagemaker` and `sagemaker-core` versions."""
    if sagemaker is not None and major(sagemaker) == SDK2_MAJOR:
        return Generation("2.x", SDK2_DISTRIBUTION, sagemaker, sdk2)
    if core is not None and major(core) == SDK3_MAJOR:
        return Generation("3.x", SDK3_DISTRIBUTION, core, sdk3)
    found = ", ".join(
        f"{name} {version}"
        for name, version in ((SDK2_DISTRIBUTION, sagemaker), (SDK3_DISTRIBUTION, core))
        if version is not None
    )
    raise CloudError(f"unsupported SageMaker Python SDK ({found or 'none installed'}): {INSTALL}")


@functools.cache
def generation() -> Generation:
    """The installed generation, said once per run (the first command that needs it)."""
    chosen = choose(installed_version(SDK2_DISTRIBUTION), installed_version(SDK3_DISTRIBUTION))
    print(f"using {chosen}", flush=True)
    return chosen


def calls() -> ModuleType:
    """The module that turns plans into this generation's SDK calls."""
    return generation().calls
