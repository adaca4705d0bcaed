"""The training engines: what trains and predicts with a recipe's pieces. One module each, and this registry.

- ``lightning`` (the default, the seed's way): NeMo 2's ``nl.Trainer.fit`` — ``MegatronStrategy`` with Megatron's
  DDP and distributed Adam on GPUs, this package's CPU strategies on CPUs (``job/lightning_engine.py``).
- ``megatron``: a loop of our own over megatron-core, as Megatron-LM and Megatron-Bridge train —
  ``get_forward_backward_func()``, Megatron's DDP, ``finalize_model_grads``, the distributed optimizer,
  ``dist_checkpointing`` — no Lightning; on CPUs the same loop with torch's DDP (gloo) and torch's Adam
  (``job/megatron_engine.py``).

Both take the same recipe (model config, data module, loss reductions, optimizer settings, run folder) and write the
same run folder (CSV + TensorBoard logs, ``checkpoints/`` last and best by val_loss with their context, the progress
file, the result line), so the launcher, ``finetune``, ``predict``, ``report`` and ``compare`` never ask which one
ran. Torch-free: the recipes and the launcher read the names. An engine module provides ``make_trainer(settings)``
(what ``builders.trainer`` returns for it), ``train(...)`` and ``predict(...)`` (see ``job/api.py``).
"""

import importlib
import typing

ENGINES = {
    "lightning": "megatron_mnist.job.lightning_engine",
    "megatron": "megatron_mnist.job.megatron_engine",
}
DEFAULT = "lightning"
Engine = typing.Literal[tuple(ENGINES)]  # type: ignore[valid-type]


def load(name: str):
    """The engine's module (imported on first use: the launcher never imports one)."""
    if name not in ENGINES:
        raise ValueError(f"trainer.loop={name!r} is not one of {', '.join(ENGINES)}")
    return importlib.import_module(ENGINES[name])


def of(trainer):
    """The engine that built ``trainer`` (``builders.trainer``'s result): its ``training_engine`` attribute."""
    return load(getattr(trainer, "training_engine", DEFAULT))
