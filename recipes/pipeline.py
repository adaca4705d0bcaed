"""The whole pipeline — pretrain → finetune → predict — as three recipes that find each other's checkpoints."""

import nemo_run as run

from megatron_mnist import defaults
from megatron_mnist.job import engines
from megatron_mnist_recipes.finetune import finetune
from megatron_mnist_recipes.predict import predict
from megatron_mnist_recipes.pretrain import pretrain


def pipeline(
    name: str = "pipeline",
    log_dir: str = defaults.LOG_DIR,
    accelerator: str = "auto",
    max_steps: int = defaults.MAX_STEPS,
    loop: str = engines.DEFAULT,
) -> dict[str, run.Partial]:
    """The stages in order, keyed by name; all three write under ``log_dir/name/``, trained and predicted by the
    engine ``loop`` (``job/engines.py``)."""
    stage_dir = f"{log_dir}/{name}"
    stages = {
        "pretrain": pretrain(name="pretrain", log_dir=stage_dir, accelerator=accelerator, max_steps=max_steps),
        "finetune": finetune(
            pretrain_checkpoint=f"{stage_dir}/pretrain",
            name="finetune",
            log_dir=stage_dir,
            accelerator=accelerator,
            max_steps=max_steps,
        ),
        "predict": predict(
            checkpoint=f"{stage_dir}/finetune", name="predict", log_dir=stage_dir, accelerator=accelerator
        ),
    }
    for stage in stages.values():
        stage.trainer.loop = loop
    return stages
