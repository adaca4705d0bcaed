"""Finetune a pretrained trunk as a digit classifier: add the ``digit_classifier`` head, drop or keep the decoder."""

import nemo_run as run

from megatron_mnist import defaults
from megatron_mnist.job import builders
from megatron_mnist.job.api import train
from megatron_mnist.model.spec import TASKS, FinetuneTask
from megatron_mnist_recipes.training import training_recipe


@run.cli.factory(target=train, name="finetune")
def finetune(
    pretrain_checkpoint: str = "runs/pretrain",
    task: FinetuneTask = "finetune",
    name: str = "finetune",
    log_dir: str = defaults.LOG_DIR,
    accelerator: builders.Accelerator = "auto",
    max_steps: int = defaults.MAX_STEPS,
    micro_batch_size: int = defaults.MICRO_BATCH_SIZE,
    lr: float = defaults.LEARNING_RATE,
) -> run.Partial:
    """The finetuning recipe: start from ``pretrain_checkpoint`` with a new classifier head.

    Args:
        pretrain_checkpoint: a checkpoint, or a run directory (its last checkpoint is used).
        task: finetune (trunk + classifier, cross-entropy; the decoder is dropped) or finetune_both (decoder kept,
            MSE + cross-entropy).
        name: the run's name and folder under ``log_dir``.
        log_dir: where run folders go.
        accelerator: auto, gpu or cpu (see the pretrain recipe).
        max_steps: optimizer steps.
        micro_batch_size: digits per forward pass.
        lr: Adam's learning rate.

    The defaults (``megatron_mnist/defaults.py``, which says why they are not the seed tutorial's) as the seed's::

        python launch.py finetune trainer.max_steps=100 trainer.val_check_interval=5 optim.lr=1e-4
    """
    return training_recipe(
        run.Config(
            builders.model_config,
            task=task,
            initial_ckpt_path=pretrain_checkpoint,
            # shown in the composed recipe, so a user sees which weights start fresh (override to keep some)
            initial_ckpt_skip_keys_with_these_prefixes=list(TASKS[task].default_skip),
        ),
        name,
        log_dir,
        accelerator,
        max_steps,
        micro_batch_size,
        lr,
    )
