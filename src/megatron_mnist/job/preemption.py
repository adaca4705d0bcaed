"""Save on preemption, so that a requeued job resumes where it stopped.

Slurm sends SIGTERM when it preempts or requeues a job (``scontrol requeue``), and SIGUSR1 ahead of the time limit
when the job was submitted with ``--signal=USR1@SECONDS``. On either, training stops after the current step, the
end of fit saves the last checkpoint (the one AutoResume looks for) and the process exits. On SIGUSR1 the job then
asks Slurm to requeue it; on SIGTERM Slurm already does. The same job script starts again in the same job directory
and resumes: no step is repeated or lost. (NeMo's PreemptionCallback does this only with torch.distributed on CUDA;
this one also covers the CPU path, and agrees across ranks when there are several.)
"""

import os
import signal
import subprocess

import torch
from lightning.pytorch.callbacks import Callback
from nemo.utils import logging

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class SaveOnPreemption(Callback):
    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def on_train_start(self, trainer, pl_module) -> None:
        # after Lightning's own handlers (registered when fit starts), which would end the run without a save
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._note)

    def _note(self, signum, frame) -> None:
        self.received = signum

    def _any_rank_received(self, trainer) -> bool:
        if trainer.world_size == 1:
            return self.received is not None  # no collective, no device sync on every step
        flag = torch.tensor(int(self.received is not None), device=trainer.strategy.root_device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not trainer.should_stop and self._any_rank_received(trainer):
            # Stop after this step: Lightning finishes its bookkeeping and logging, and the end of fit saves the
            # last checkpoint (with the optimizer) as for any run, so the resumed run continues at the next step.
            name = signal.Signals(self.received).name if self.received else "a signal on another rank"
            logging.info(f"{name} after step {trainer.global_step}: saving the last checkpoint, then exiting")
            trainer.should_stop = True

    def teardown(self, trainer, pl_module, stage) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        if self.received == signal.SIGUSR1 and trainer.is_global_zero and "SLURM_JOB_ID" in os.environ:
            # the time limit is near: the checkpoint is saved, so ask Slurm to run the job again
            subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], check=False)
