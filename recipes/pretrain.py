"""Pretrain the autoencoder (trunk + decoder) on MSE reconstruction."""

from typing import Literal

import nemo_run as run

from megatron_mnist import builders
from megatron_mnist.api import train
from recipes.training import training_recipe


@run.cli.factory(target=train, name="pretrain")
def pretrain(
    name: str = "pretrain",
    log_dir: str = "runs",
    accelerator: Literal["auto", "gpu", "cpu"] = "auto",
    max_steps: int = 500,
    micro_batch_size: int = 64,
    lr: float = 1e-3,
) -> run.Partial:
    """The autoencoder pretraining recipe; its run directory is ``log_dir/name``.

    Args:
        name: the run's name and folder; running the same name again resumes from its last checkpoint.
        log_dir: where run folders go.
        accelerator: auto (GPU with MegatronStrategy + bf16 when CUDA is visible, else CPU in fp32), gpu or cpu.
        max_steps: optimizer steps.
        micro_batch_size: digits per forward pass (global batch = micro × data-parallel ranks).
        lr: Adam's learning rate.
    """
    return training_recipe(
        run.Config(builders.model_config, task="pretrain"), name, log_dir, accelerator, max_steps, micro_batch_size, lr
    )
