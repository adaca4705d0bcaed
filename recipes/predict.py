"""Predict the held-out digits with a trained model; writes predictions.pt and metrics.json in the run folder."""

import nemo_run as run

from megatron_mnist import defaults
from megatron_mnist.job import builders
from megatron_mnist.job.api import predict as predict_fn
from megatron_mnist.model.spec import Task


@run.cli.factory(target=predict_fn, name="predict")
def predict(
    checkpoint: str = f"{defaults.LOG_DIR}/finetune",
    task: Task = "finetune",
    name: str = "predict",
    log_dir: str = defaults.LOG_DIR,
    accelerator: builders.Accelerator = "auto",
    micro_batch_size: int = defaults.PREDICT_MICRO_BATCH_SIZE,
) -> run.Partial:
    """The prediction recipe.

    Args:
        checkpoint: a checkpoint, or a run directory (its last checkpoint is used).
        task: the model the checkpoint holds (finetune / finetune_both give digit logits; pretrain only embeddings).
        name: the run's name and folder under ``log_dir``.
        log_dir: where run folders go.
        accelerator: auto, gpu or cpu.
        micro_batch_size: digits per forward pass.
    """
    return run.Partial(
        predict_fn,
        model=run.Config(builders.model_config, task=task, initial_ckpt_path=checkpoint),
        data=run.Config(builders.mnist_data, micro_batch_size=micro_batch_size),
        trainer=run.Config(builders.trainer, accelerator=accelerator, enable_progress_bar=False),
        log=run.Config(builders.logger, name=name, log_dir=log_dir, checkpoint=False),
    )
