"""Pretrain the autoencoder (trunk + decoder) on MSE reconstruction."""

from typing import Literal

import nemo_run as run

from megatron_mnist import builders
from megatron_mnist.api import train


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
    return run.Partial(
        train,
        model=run.Config(builders.model_config, task="pretrain"),
        data=run.Config(builders.mnist_data, micro_batch_size=micro_batch_size),
        trainer=run.Config(builders.trainer, accelerator=accelerator, max_steps=max_steps, val_check_interval=50),
        optim=run.Config(builders.Adam, lr=lr),
        log=run.Config(builders.logger, name=name, log_dir=log_dir),
        resume=run.Config(builders.resume, resume_if_exists=True),
    )
