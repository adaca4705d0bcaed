"""The job's side of the launcher's live progress: a small JSON file, rewritten every few seconds by global rank 0.

The launcher names the file in ``MEGATRON_MNIST_PROGRESS`` (inside the job's directory, wherever that is: this
machine, a container's mount, a cluster behind SSH) and reads it while it waits; no network service is involved.
Written to a temporary name and renamed, so a reader never sees half a file. :class:`ProgressWriter` is the file;
each engine feeds it (the Lightning engine through a callback of its own). Torch-free: a job notes what it is
doing while it starts (:func:`note`: importing, building, loading a checkpoint), before the training stack is loaded.
"""

import json
import os
import time
from pathlib import Path

from megatron_mnist.job_protocol import PROGRESS_ENV, STAGE_ENV


class ProgressWriter:
    """Writes the state, step, losses, steps/s (over the last ``window_s`` seconds) and time left."""

    def __init__(self, path: str, every_s: float = 2.0, window_s: float = 10.0):
        self.path, self.every_s, self.window_s = Path(path), every_s, window_s
        self._last_write = 0.0
        self._recent: list[tuple[float, int]] = []  # (time, step): the rate is the recent one, not since the start

    def due(self) -> bool:
        return time.monotonic() - self._last_write >= self.every_s

    def write(self, state: str, step: int | None, max_steps: int | None, train_loss=None, val_loss=None) -> None:
        now = time.monotonic()
        rate = None
        if step is not None:  # None: starting, no step yet
            self._recent = [(t, s) for t, s in self._recent if now - t <= self.window_s][-50:] + [(now, step)]
            t0, s0 = self._recent[0]
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
            "stage": os.environ.get(STAGE_ENV),  # a pipeline run as one job: which of its stages
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


def note(state: str) -> None:
    """What a starting job is doing (``importing``, ``loading its checkpoint``…), for the launcher's line; nothing
    where the launcher asked for no progress file, or on another rank than global rank 0."""
    from megatron_mnist.run_dirs import global_rank

    if (writer := writer_from_environment()) is not None and global_rank() == 0:
        writer.write(state, None, None)
