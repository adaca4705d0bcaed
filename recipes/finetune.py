"""Finetune a pretrained trunk as a digit classifier: add the ``digit_classifier`` head, drop or keep the decoder."""

from typing import Literal

import nemo_run as run

from megatron_mnist import builders
from megatron_mnist.api import train
from recipes.training import training_recipe


@run.cli.factory(target=train, name="finetune")
def finetune(
    pretrain_checkpoint: str = "runs/pretrain",
    task: Literal["finetune", "finetune_both"] = "finetune",
    name: str = "finetune",
    log_dir: str = "runs",
    accelerator: Literal["auto", "gpu", "cpu"] = "auto",
    max_steps: int = 500,
    micro_batch_size: int = 64,
    lr: float = 1e-3,
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
    """
    return training_recipe(
        run.Config(
            builders.model_config,
            task=task,
            initial_ckpt_path=pretrain_checkpoint,
            initial_ckpt_skip_keys_with_these_prefixes=["digit_classifier"],
        ),
        name,
        log_dir,
        accelerator,
        max_steps,
        micro_batch_size,
        lr,
    )
