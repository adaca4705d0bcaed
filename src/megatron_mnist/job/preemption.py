"""Save on preemption, so that a requeued job resumes where it stopped.

Slurm sends SIGTERM when it preempts or requeues a job (``scontrol requeue``), and SIGUSR1 ahead of the time limit
when the job was submitted with ``--signal=USR1@SECONDS``; the launcher's Ctrl-C and ``cancel`` send SIGTERM too.
On either, training stops after the current step, the last checkpoint is saved (the one a resume looks for) and the
process exits; the run's result says which signal stopped it, so the launcher reports it CANCELLED, not SUCCEEDED.
On SIGUSR1 the job then asks Slurm to requeue it; on SIGTERM from a preemption Slurm already does. The same job
script starts again in the same job directory and resumes: no step is repeated or lost. (NeMo's
PreemptionCallback does this only with torch.distributed on CUDA; this covers the CPU path too, and agrees across
ranks.) :class:`StopSignals` is the engine-free part; :class:`SaveOnPreemption` the Lightning engine's callback.
"""

import os
import signal
import subprocess

import torch
from lightning.pytorch.callbacks import Callback
from nemo.utils import logging

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopSignals:
    """Catches SIGTERM / SIGUSR1 while installed; the training loop asks :meth:`any_rank` after each step."""

    def __init__(self):
        self.received: int | None = None
        self.stopped_by: str | None = None  # set when the loop stopped on it
        self._previous = {}

    def install(self) -> None:
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._note)

    def _note(self, signum, frame) -> None:
        self.received = signum

    def any_rank(self, world_size: int, device) -> bool:
        """Whether any rank received one (a collective where there are several ranks; none on one)."""
        if world_size == 1:
            return self.received is not None  # no collective, no device sync on every step
        flag = torch.tensor(int(self.received is not None), device=device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def stop_now(self) -> str:
        """Note that the loop stops on it; the signal's name (or the other rank's)."""
        self.stopped_by = signal.Signals(self.received).name if self.received else "a signal on another rank"
        return self.stopped_by

    def restore(self, is_global_zero: bool) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        if self.received == signal.SIGUSR1 and is_global_zero and "SLURM_JOB_ID" in os.environ:
            # the time limit is near: the checkpoint is saved, so ask Slurm to run the job again
            subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], check=False)


class SaveOnPreemption(Callback):
    def __init__(self):
        self.signals = StopSignals()

    def on_train_start(self, trainer, pl_module) -> None:
        self.signals.install()  # after Lightning's own handlers (set when fit starts), which end the run unsaved

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not trainer.should_stop and self.signals.any_rank(trainer.world_size, trainer.strategy.root_device):
            # Stop after this step: Lightning finishes its bookkeeping and logging, and the end of fit saves the
            # last checkpoint (with the optimizer) as for any run, so the resumed run continues at the next step.
            name = self.signals.stop_now()
            logging.info(f"{name} after step {trainer.global_step}: saving the last checkpoint, then exiting")
            trainer.should_stop = True

    def teardown(self, trainer, pl_module, stage) -> None:
        self.signals.restore(trainer.is_global_zero)
