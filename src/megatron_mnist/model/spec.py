"""The model's tasks: the one table of what each task builds. Torch-free, so the launcher's checks read it too.

Every task name, model config class, head and default skip prefix comes from :data:`TASKS`: the recipes' and
builders' choices of task, the model configs' heads and defaults (``model/config.py``), and the pre-submit checks of
a checkpoint against a recipe (``recipe_checks``, which judge a checkpoint by the config class named in its saved
context).
"""

from dataclasses import dataclass
from typing import Literal

# the model's parts, named as its attributes (model/modules.py) and so as its checkpoint's key prefixes
TRUNK = "trunk"  # 784 → 64 → ReLU → 3: every task's
DECODER = "image_decoder"  # 3 → 64 → 784: reconstructs the digit (MSE)
CLASSIFIER = "digit_classifier"  # 3 → 10: the digit's logits (cross-entropy)


@dataclass(frozen=True)
class TaskSpec:
    """What a task's model is: its config class (in ``model/config.py``), its heads beside the trunk (the model
    builds these, ``model/modules.py``), its loss (a ``MegatronLossReduction`` of ``model/losses.py``, by name), and
    the parameters it does not take from an initial checkpoint by default (a head it trains fresh)."""

    config: str
    heads: frozenset[str]
    loss: str
    default_skip: tuple[str, ...] = ()


TASKS: dict[str, TaskSpec] = {
    "pretrain": TaskSpec("PretrainConfig", frozenset({DECODER}), "MSELossReduction"),
    "finetune": TaskSpec("FinetuneConfig", frozenset({CLASSIFIER}), "ClassifierLossReduction", (CLASSIFIER,)),
    "finetune_both": TaskSpec(
        "FinetuneBothConfig", frozenset({DECODER, CLASSIFIER}), "MSEPlusClassifierLossReduction", (CLASSIFIER,)
    ),
}

# the same names as types, for the recipes' and builders' signatures (NeMo-Run's CLI and the pre-submit checks read
# the choices from them); made from the table, so a task added there is a choice everywhere
Task = Literal[tuple(TASKS)]  # type: ignore[valid-type]
FinetuneTask = Literal[tuple(t for t, spec in TASKS.items() if CLASSIFIER in spec.heads)]  # type: ignore[valid-type]
CONFIG_HEADS: dict[str, frozenset[str]] = {spec.config: spec.heads for spec in TASKS.values()}


def spec_of(task: str) -> TaskSpec:
    """The task's spec; a ValueError naming the tasks for anything else."""
    if task not in TASKS:
        raise ValueError(f"model.task={task!r} is not one of {', '.join(TASKS)}")
    return TASKS[task]
