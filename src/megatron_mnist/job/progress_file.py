"""The job's side of the launcher's live progress: a small JSON file, rewritten every few seconds by global rank 0.

The launcher names the file in ``MEGATRON_MNIST_PROGRESS`` (inside the job's directory, wherever that is: this
machine, a container's mount, a cluster behind SSH) and reads it while it waits; no network service is involved.
Written to a temporary name and renamed, so a reader never sees half a file. :class:`ProgressWriter` is the file;
each engine feeds it (the Lightning engine through :class:`ProgressFile`, a callback).
"""

import json
import os
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from megatron_mnist.job_protocol import PROGRESS_ENV


class ProgressWriter:
    """Writes the state, step, losses, steps/s (over the last ``window_s`` seconds) and time left."""

    def __init__(self, path: str, every_s: float = 2.0, window_s: float = 10.0):
        self.path, self.every_s, self.window_s = Path(path), every_s, window_s
        self._last_write = 0.0
        self._recent: list[tuple[float, int]] = []  # (time, step): the rate is the recent one, not since the start

    def due(self) -> bool:
        return time.monotonic() - self._last_write >= self.every_s

    def write(self, state: str, step: int, max_steps: int | None, train_loss=None, val_loss=None) -> None:
        now = time.monotonic()
        self._recent = [(t, s) for t, s in self._recent if now - t <= self.window_s][-50:] + [(now, step)]
        (t0, s0), rate = self._recent[0], None
        if now > t0 and step > s0:
            rate = (step - s0) / (now - t0)
        left = (max_steps - step) / rate if rate and max_steps and max_steps > 0 else None
        record = {
            "state": state,
            "step": step,
            "max_steps": max_steps,
            "train_loss": train_loss,
            "val_loss": val_loss,
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


def writer_from_environment() -> ProgressWriter | None:
    """The writer, where the launcher asked for one."""
    path = os.environ.get(PROGRESS_ENV)
    return ProgressWriter(path) if path else None


def from_environment() -> list:
    """The Lightning callback, where the launcher asked for one."""
    writer = writer_from_environment()
    return [ProgressFile(writer)] if writer else []


def metric(trainer, name: str) -> float | None:
    """A metric a Lightning trainer logged, as a float (a device sync on GPU), None where not logged."""
    value = trainer.callback_metrics.get(name)
    return None if value is None else float(value)


class ProgressFile(Callback):
    """The Lightning engine's feed of :class:`ProgressWriter`, from global rank 0."""

    def __init__(self, writer: ProgressWriter):
        self.writer = writer
        self._val_loss = None

    def write(self, trainer, state: str) -> None:
        if trainer.is_global_zero:
            self.writer.write(state, trainer.global_step, trainer.max_steps, metric(trainer, "train_loss"),
                              self._val_loss)  # fmt: skip

    def on_train_start(self, trainer, pl_module):
        self.write(trainer, "training")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.writer.due():
            self.write(trainer, "training")

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._val_loss = metric(trainer, "val_loss")
            self.write(trainer, "training")

    def on_train_end(self, trainer, pl_module):
        self.write(trainer, "done")
