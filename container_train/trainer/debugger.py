"""SageMaker Debugger (smdebug): a hook when the platform asks for one, else nothing.

SageMaker writes debughookconfig.json when a job has a DebuggerHookConfig or rules.
Locally there is none, and smdebug may be absent: then training runs without a hook.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from trainer.contract import TrainingPaths, debug_hook_config_file

log = logging.getLogger(__name__)


class Debugger:
    """Switches the hook between TRAIN and EVAL; a no-op when there is no hook."""

    def __init__(self, hook: Any = None, modes: Any = None) -> None:
        self.hook = hook
        self.modes = modes

    def register(self, module: nn.Module, loss: nn.Module) -> None:
        if self.hook:
            self.hook.register_module(module)
            self.hook.register_loss(loss)

    def train_mode(self) -> None:
        if self.hook:
            self.hook.set_mode(self.modes.TRAIN)

    def eval_mode(self) -> None:
        if self.hook:
            self.hook.set_mode(self.modes.EVAL)

    def close(self) -> None:
        # Without close() a trial reader keeps waiting for more steps.
        if self.hook:
            self.hook.close()


def create_debugger(paths: TrainingPaths) -> Debugger:
    config_file = debug_hook_config_file(paths)
    if not config_file.is_file():
        log.info("Debugger off: no hook config at %s", config_file)
        return Debugger()
    try:
        import smdebug.pytorch as smd  # noqa: PLC0415 - optional, and slow to import
    except ImportError:
        log.info("Debugger off: %s exists but smdebug is not installed", config_file)
        return Debugger()
    config = json.loads(config_file.read_text())
    if "LocalPath" not in config:
        # smdebug's default is /opt/ml/output/tensors; keep tensors inside this job's base dir.
        config["LocalPath"] = str(paths.output_dir / "tensors")
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(config, handle)
        config_file = Path(handle.name)
    hook = smd.Hook.create_from_json_file(str(config_file))
    log.info("Debugger on: tensors go to %s", config["LocalPath"])
    return Debugger(hook, smd.modes)
