"""The job's side of the launcher's live progress: a small JSON file, rewritten every few seconds by global rank 0.

The launcher names the file in ``MEGATRON_MNIST_PROGRESS`` (inside the job's directory, wherever that is: this
machine, a container's mount, a cluster behind SSH) and reads it while it waits; no network service is involved.
Written to a temporary name and renamed, so a reader never sees half a file.
"""

import json
import os
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from megatron_mnist.job.api import metric  # a device sync: every few seconds, not every step
from megatron_mnist.job_protocol import PROGRESS_ENV


class ProgressFile(Callback):
    def __init__(self, path: str, every_s: float = 2.0):
        self.path, self.every_s = Path(path), every_s
        self._last_write = 0.0
        self._started = self._start_step = None
        self._val_loss = None

    def write(self, trainer, state: str) -> None:
        if not trainer.is_global_zero:
            return
        now = time.monotonic()
        step = trainer.global_step
        done = step - (self._start_step or 0)
        rate = done / (now - self._started) if self._started is not None and now > self._started and done else None
        left = (trainer.max_steps - step) / rate if rate and trainer.max_steps and trainer.max_steps > 0 else None
        record = {
            "state": state,
            "step": step,
            "max_steps": trainer.max_steps,
            "train_loss": metric(trainer, "train_loss"),
            "val_loss": self._val_loss,
            "steps_per_s": rate,
            "eta_s": left,
            "time": time.time(),
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            tmp.write_text(json.dumps(record))
            tmp.replace(self.path)
        except OSError:
            pass  # progress is a courtesy: never fail a run over it
        self._last_write = now

    def on_train_start(self, trainer, pl_module):
        self._started, self._start_step = time.monotonic(), trainer.global_step
        self.write(trainer, "training")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if time.monotonic() - self._last_write >= self.every_s:
            self.write(trainer, "training")

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._val_loss = metric(trainer, "val_loss")
            self.write(trainer, "training")

    def on_train_end(self, trainer, pl_module):
        self.write(trainer, "done")


def from_environment() -> list[Callback]:
    """The callback, where the launcher asked for one."""
    path = os.environ.get(PROGRESS_ENV)
    return [ProgressFile(path)] if path else []
