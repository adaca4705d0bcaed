"""Pretrain the autoencoder (trunk + decoder) on MSE reconstruction."""

import nemo_run as run

from megatron_mnist import defaults
from megatron_mnist.job import builders
from megatron_mnist.job.api import train
from megatron_mnist_recipes.training import training_recipe


@run.cli.factory(target=train, name="pretrain")
def pretrain(
    name: str = "pretrain",
    log_dir: str = defaults.LOG_DIR,
    accelerator: builders.Accelerator = "auto",
    max_steps: int = defaults.MAX_STEPS,
    micro_batch_size: int = defaults.MICRO_BATCH_SIZE,
    lr: float = defaults.LEARNING_RATE,
) -> run.Partial:
    """The autoencoder pretraining recipe; its run directory is ``log_dir/name``.

    Args:
        name: the run's name and folder; running the same name again resumes from its last checkpoint.
        log_dir: where run folders go.
        accelerator: auto (GPU with MegatronStrategy + bf16 when CUDA is visible, else CPU in fp32), gpu or cpu.
        max_steps: optimizer steps.
        micro_batch_size: digits per forward pass (global batch = micro × data-parallel ranks).
        lr: Adam's learning rate.

    The defaults (``megatron_mnist/defaults.py``, which says why they are not the seed tutorial's) as the seed's::

        python launch.py pretrain trainer.max_steps=100 trainer.val_check_interval=5 optim.lr=1e-4
    """
    return training_recipe(
        run.Config(builders.model_config, task="pretrain"), name, log_dir, accelerator, max_steps, micro_batch_size, lr
    )
