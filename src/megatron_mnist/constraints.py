"""Every rule a recipe's values must meet, stated once: each setting's own constraint (:data:`CONSTRAINTS`) and the
rules between settings and the ranks that run them (:func:`global_batch_size`, :func:`micro_batches_per_step`,
:func:`check_ranks`). The launcher checks them before anything is submitted (``launcher/recipe_checks.py``); the
builders, the strategies and the engines check them again on the node, for a recipe composed in Python that never
met the launcher — the same one line either way. The defaults themselves are in ``defaults.py``.

Imports only the error vocabulary, so both rooms (where the user types, and the node) read it.
"""

import math
import typing
from typing import Literal, Optional

from megatron_mnist.errors import RecipeError


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# each builder argument's own constraint: {recipe key: (holds, what it must be)}
CONSTRAINTS: dict[str, tuple[typing.Callable[[typing.Any], bool], str]] = {
    "trainer.max_steps": (_positive_int, "must be a positive integer"),
    "trainer.val_check_interval": (_positive_int, "must be a positive integer (optimizer steps)"),
    "trainer.limit_val_batches": (_positive_int, "must be a positive integer (batches per validation)"),
    "trainer.log_every_n_steps": (_positive_int, "must be a positive integer"),
    "trainer.devices": (_positive_int, "must be a positive integer"),
    "trainer.num_nodes": (_positive_int, "must be a positive integer"),
    "data.micro_batch_size": (_positive_int, "must be a positive integer"),
    "data.global_batch_size": (_positive_int, "must be a positive integer"),
    "data.val_size": (_positive_int, "must be a positive integer"),
    "data.num_workers": (lambda v: isinstance(v, int) and v >= 0, "must be 0 or more"),
    "model.hidden_size": (_positive_int, "must be a positive integer"),
    "optim.lr": (lambda v: _number(v) and v > 0, "must be positive (and finite)"),
    "optim.weight_decay": (lambda v: _number(v) and v >= 0, "must be 0 or more (and finite)"),
    "optim.adam_beta1": (lambda v: _number(v) and 0 <= v < 1, "must be in [0, 1)"),
    "optim.adam_beta2": (lambda v: _number(v) and 0 <= v < 1, "must be in [0, 1)"),
    "optim.adam_eps": (lambda v: _number(v) and v > 0, "must be positive (and finite)"),
}


def check_value(key: str, value) -> None:
    """:class:`~megatron_mnist.errors.RecipeError` naming ``key=value`` and what it must be, unless ``value`` is None
    (unset) or meets its constraint."""
    holds, expected = CONSTRAINTS[key]
    if value is not None and not holds(value):
        raise RecipeError(f"{key}={value!r} {expected}")


def check_values(section: str, **values) -> None:
    """:func:`check_value` for a builder's arguments: ``check_values("data", micro_batch_size=64)``."""
    for name, value in values.items():
        check_value(f"{section}.{name}", value)


# -- between settings, and against the ranks ------------------------------------------------------------------------
# Every rank is data parallel (no tensor or pipeline parallelism): ranks = ranks per node × nodes.


def global_batch_size(micro_batch_size: int, global_batch_size: int | None, ranks: int) -> int:
    """Digits per optimizer step over all ranks: as set, or one micro-batch per rank where unset."""
    return micro_batch_size * ranks if global_batch_size is None else global_batch_size


def micro_batches_per_step(global_batch_size: int, micro_batch_size: int, ranks: int) -> int:
    """The micro-batches each rank runs (accumulates) per optimizer step: the global batch must split evenly into
    micro-batches over the ranks."""
    micro_batches, rest = divmod(global_batch_size, micro_batch_size * ranks)
    if rest or micro_batches < 1:
        raise RecipeError(
            f"data.global_batch_size={global_batch_size} is not a multiple of "
            f"data.micro_batch_size={micro_batch_size} × {ranks} data-parallel rank(s)"
        )
    return micro_batches


def check_ranks(devices: int | None, num_nodes: int | None, started: tuple[int, int], by: str) -> None:
    """``trainer.devices`` / ``trainer.num_nodes``, where set, are the ranks per node and nodes that ``by`` (the
    executor, before submitting; the launcher, on the node) starts: ``started``."""
    for key, value, launched, executor_key in (
        ("trainer.devices", devices, started[0], "executor.ntasks_per_node"),
        ("trainer.num_nodes", num_nodes, started[1], "executor.nodes"),
    ):
        if value is not None and value != launched:
            raise RecipeError(
                f"{key}={value} but {by} starts {launched} ({executor_key}): leave {key} unset "
                "(it follows the executor) or make them equal"
            )


# -- precision and graph mode, against the hardware and the engine ---------------------------------------------------
# Lightning's names. 16-mixed is fp16 with Megatron's dynamic loss scaling (no Apex needed).
Precision = Literal["32", "bf16-mixed", "16-mixed"]
PRECISIONS = typing.get_args(Precision)


def resolve_precision(precision: Optional[str], accelerator: str) -> str:
    """None → bf16-mixed on a GPU (the seed's choice), 32 on a CPU; the CPU trains in fp32 only."""
    if precision is not None and precision not in PRECISIONS:
        raise RecipeError(f"trainer.precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    if accelerator == "cpu" and precision not in (None, "32"):
        raise RecipeError(f"trainer.precision={precision} needs a GPU: on a CPU the recipe trains in fp32 (32)")
    return precision or ("bf16-mixed" if accelerator == "gpu" else "32")


def check_graph_mode(loop: str, cuda_graph: bool, accelerator: str, precision: Optional[str] = None,
                     device_resident: bool = True) -> None:  # fmt: skip
    """Graph mode is the megatron loop's, on a GPU, in bf16 or fp32, over digits kept on the GPU (the launcher
    checks the same before submitting): fp16's loss scaling reads the gradients' overflow on the host every step,
    which a graph cannot; the graph gathers each step's digits itself."""
    if cuda_graph and loop != "megatron":
        raise RecipeError("trainer.cuda_graph=true needs trainer.loop=megatron (the Lightning loop runs eagerly)")
    if cuda_graph and accelerator != "gpu":
        raise RecipeError("trainer.cuda_graph=true needs a GPU (CUDA graphs): set trainer.cuda_graph=false on a CPU")
    if cuda_graph and precision == "16-mixed":
        raise RecipeError(
            "trainer.cuda_graph=true with trainer.precision=16-mixed: fp16's loss scaling reads the gradients' "
            "overflow on the host every step, which a CUDA graph cannot (use bf16-mixed or 32)"
        )
    if cuda_graph and not device_resident:
        raise RecipeError(
            "trainer.cuda_graph=true gathers each step's digits on the GPU inside the graph: it needs "
            "data.device_resident=true (the digits kept on the GPU)"
        )
