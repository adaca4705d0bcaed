"""What the training recipes share: every field of ``train`` but the model."""

import nemo_run as run

from megatron_mnist.job import builders
from megatron_mnist.job.api import train


def training_recipe(
    model: run.Config, name: str, log_dir: str, accelerator: str, max_steps: int, micro_batch_size: int, lr: float
) -> run.Partial:
    return run.Partial(
        train,
        model=model,
        data=run.Config(builders.mnist_data, micro_batch_size=micro_batch_size),
        trainer=run.Config(builders.trainer, accelerator=accelerator, max_steps=max_steps),
        optim=run.Config(builders.Adam, lr=lr),
        log=run.Config(builders.logger, name=name, log_dir=log_dir),
        resume=run.Config(builders.resume, resume_if_exists=True),
    )
