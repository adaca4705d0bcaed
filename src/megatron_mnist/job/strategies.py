"""Lightning strategies for machines without CUDA that keep ``MegatronStrategy``'s contract with the module.

``nl.MegatronStrategy`` needs CUDA. On a CPU the recipe picks :class:`CPUStrategy` (one process) or
:class:`CPUDDPStrategy` (several ranks started by torchrun or srun, gloo) instead, and nothing else changes: the
module's ``*_step`` returns model outputs and its ``*_loss_reduction`` makes the loss, batches come from the data
module's ``MegatronDataSampler`` settings through Megatron's pretraining sampler (each rank its own shard; a
resumed run continues at the samples already consumed), and losses are logged as MegatronStrategy logs them.
"""

import shutil
from datetime import timedelta
from pathlib import Path

import torch
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

from megatron_mnist.constraints import micro_batches_per_step


def apply_reduction(reduction, batch, forward_out):
    """Call a ``MegatronLossReduction`` as Megatron's schedule does: the batch is set, then the output passed."""
    reduction.setup(batch)
    return reduction(forward_out)


class _MegatronContract:
    """MegatronStrategy's step contract and Megatron's batch sampler, for a Lightning CPU strategy."""

    def setup(self, trainer) -> None:
        super().setup(trainer)
        self._val_check_steps = getattr(self, "_val_check_steps", trainer.val_check_interval)
        sampler = self._data_sampler()
        if sampler is not None:
            micro_batches = micro_batches_per_step(sampler.global_batch_size, sampler.micro_batch_size, self.world_size)
            # Megatron runs the micro-batches of a global batch inside one step; Lightning accumulates them.
            trainer.accumulate_grad_batches = micro_batches
            if isinstance(trainer.val_check_interval, int):
                # Lightning counts it in batches, Megatron (and this recipe) in optimizer steps
                trainer.val_check_interval = self._val_check_steps * micro_batches

    def _data_sampler(self):
        datamodule = getattr(self.lightning_module.trainer, "datamodule", None)
        return getattr(datamodule, "data_sampler", None)

    def remove_checkpoint(self, filepath) -> None:
        # NeMo's ModelCheckpoint writes NAME.ckpt beside a NAME/ context folder; drop both, or stale context folders
        # pile up and look like checkpoints to AutoResume.
        super().remove_checkpoint(filepath)
        context_dir = Path(str(filepath).removesuffix(".ckpt"))
        if self.is_global_zero and context_dir.is_dir() and not (context_dir / "weights").exists():
            shutil.rmtree(context_dir, ignore_errors=True)

    def process_dataloader(self, dataloader):
        sampler = self._data_sampler()
        if sampler is None:
            return dataloader
        mode = getattr(dataloader, "mode", "train")
        datamodule = self.lightning_module.trainer.datamodule
        return datamodule.megatron_loader(
            "predict" if mode == "test" else mode, sampler.init_consumed_samples, self.global_rank, self.world_size
        )

    def training_step(self, batch, batch_idx=None):
        out = super().training_step(batch, batch_idx)
        loss, _ = apply_reduction(self.lightning_module.training_loss_reduction(), batch, out)
        # Megatron reports a step's loss as the mean over its micro-batches (the reduction's `reduce`); Lightning
        # calls this once per micro-batch, so keep the running mean: the step's last call reports the same.
        step = self.lightning_module.trainer.global_step
        if getattr(self, "_losses_of_step", None) != step:
            self._losses_of_step, self._step_losses = step, []
        self._step_losses.append(loss.detach())
        return {"loss": loss, "step_loss": torch.stack(self._step_losses).mean()}

    def validation_step(self, batch, batch_idx=None):
        out = super().validation_step(batch, batch_idx)
        loss, _ = apply_reduction(self.lightning_module.validation_loss_reduction(), batch, out)
        self.lightning_module.log(
            "val_loss", loss, prog_bar=True, on_epoch=True, batch_size=len(batch["label"]), sync_dist=True
        )
        return loss

    def predict_step(self, batch, batch_idx=None):
        out = super().predict_step(batch, batch_idx)
        reduction = self.lightning_module.predict_loss_reduction()
        _, reduced = apply_reduction(reduction, batch, out)
        return reduction.reduce([reduced])


class CPUStrategy(_MegatronContract, SingleDeviceStrategy):
    """One CPU process, fp32."""

    strategy_name = "megatron_mnist_cpu"

    def __init__(self):
        super().__init__(device=torch.device("cpu"))


class CPUDDPStrategy(_MegatronContract, DDPStrategy):
    """Data-parallel CPU ranks (gloo), started by torchrun or srun: gradients averaged across ranks each step.

    ``timeout`` bounds every collective: a rank that dies (a lost node) fails the others after at most that long
    instead of leaving them blocked for gloo's default 30 minutes.
    """

    strategy_name = "megatron_mnist_cpu_ddp"

    def __init__(self, timeout: timedelta = timedelta(minutes=5)):
        super().__init__(process_group_backend="gloo", timeout=timeout)
