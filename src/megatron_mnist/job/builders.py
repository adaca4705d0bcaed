"""The pieces a recipe configures, as small typed factories.

A recipe is a ``run.Partial`` whose fields are ``run.Config``s of these functions. Each imports the training stack
only when it is called — on the node that runs the job — so composing, printing, overriding and submitting a
recipe never imports torch, NeMo or Megatron (the launcher's dry run takes about a second instead of ten).

The builders check and resolve settings — the hardware (:func:`resolve_accelerator`), the precision, the ranks the
launcher started — and the engine the recipe names (``trainer.loop``, ``job/engines.py``) builds its framework
objects from them: on a GPU Megatron's DDP and distributed Adam in bf16-mixed (or the precision asked for), on a CPU
fp32 with torch's Adam.
"""

import typing
from dataclasses import dataclass
from typing import Literal, Optional

from megatron_mnist import defaults
from megatron_mnist.constraints import Precision, check_graph_mode, check_ranks, check_values, resolve_precision
from megatron_mnist.constraints import global_batch_size as resolve_global_batch_size
from megatron_mnist.errors import RecipeError
from megatron_mnist.job import engines
from megatron_mnist.job.engines import DEFAULT as DEFAULT_ENGINE
from megatron_mnist.job.engines import Engine
from megatron_mnist.model.spec import Task, spec_of

Accelerator = Literal["auto", "gpu", "cpu"]

ACCELERATORS = typing.get_args(Accelerator)


def resolve_accelerator(accelerator: str) -> str:
    """ "auto" → "gpu" where CUDA is visible, else "cpu"; "gpu" without a GPU is an error."""
    import torch

    if accelerator not in ACCELERATORS:
        raise RecipeError(f"trainer.accelerator={accelerator!r} is not one of {', '.join(ACCELERATORS)}")
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise RecipeError("trainer.accelerator=gpu but this machine has no CUDA GPU (use auto or cpu)")
    return accelerator


def model_config(
    task: Task = "pretrain",
    hidden_size: int = defaults.HIDDEN_SIZE,
    initial_ckpt_path: Optional[str] = None,
    initial_ckpt_skip_keys_with_these_prefixes: Optional[list[str]] = None,
):
    """The model's Megatron config (a ``TransformerConfig``) for a task.

    Args:
        task: pretrain (autoencoder, MSE), finetune (classifier, cross-entropy) or finetune_both (MSE + CE).
        hidden_size: width of the trunk's and decoder's hidden layer.
        initial_ckpt_path: weights to start from: a checkpoint, or a run directory (its last checkpoint).
        initial_ckpt_skip_keys_with_these_prefixes: parameters not to take from it (None = the task's default:
            the task's ``default_skip`` in model/spec.py: a finetune starts ``digit_classifier`` fresh).
    """
    spec_of(task)  # the task's name checked before the model code is imported
    from megatron_mnist.model.config import CONFIGS

    check_values("model", hidden_size=hidden_size)
    kwargs = {"hidden_size": hidden_size, "initial_ckpt_path": initial_ckpt_path}
    if initial_ckpt_skip_keys_with_these_prefixes is not None:
        kwargs["initial_ckpt_skip_keys_with_these_prefixes"] = list(initial_ckpt_skip_keys_with_these_prefixes)
    return CONFIGS[task](**kwargs)


def mnist_data(
    root: Optional[str] = None,
    micro_batch_size: int = defaults.MICRO_BATCH_SIZE,
    global_batch_size: Optional[int] = None,
    val_size: Optional[int] = None,
    num_workers: int = 0,
    device_resident: bool = True,
    download: bool = False,
):
    """The MNIST data module (see ``MNISTDataModule``); ``root=None`` trains on the embedded 10,000-digit sample.

    ``global_batch_size`` (digits per optimizer step over all ranks) = micro × ranks × accumulation; None = micro ×
    ranks. Set it to keep a run's batch when the number of ranks changes.

    ``device_resident`` (default) keeps the digits on the training device and gathers batches there; False gives the
    classic per-item DataLoader with ``num_workers`` worker processes.
    """
    from megatron_mnist.data.datamodule import MNISTDataModule
    from megatron_mnist.job.world import launcher_world

    check_values("data", micro_batch_size=micro_batch_size, global_batch_size=global_batch_size, val_size=val_size,
                 num_workers=num_workers)  # fmt: skip
    return MNISTDataModule(
        root=root,
        micro_batch_size=micro_batch_size,
        global_batch_size=resolve_global_batch_size(micro_batch_size, global_batch_size, launcher_world().size),
        val_size=val_size,
        num_workers=num_workers,
        device_resident=device_resident,
        download=download,
    )


@dataclass(frozen=True)
class TrainerSettings:
    """What ``trainer`` resolved, for the engine that builds the trainer from it (``job/engines.py``)."""

    engine: str
    accelerator: str  # "gpu" or "cpu", decided on the node
    precision: str  # "32", "bf16-mixed" or "16-mixed"
    devices: int
    num_nodes: int
    max_steps: int
    val_check_interval: int
    limit_val_batches: Optional[int]
    log_every_n_steps: int
    enable_progress_bar: bool
    collective_timeout_s: int
    cuda_graph: bool

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes


def trainer(
    accelerator: Accelerator = "auto",
    devices: Optional[int] = None,
    num_nodes: Optional[int] = None,
    max_steps: int = defaults.MAX_STEPS,
    val_check_interval: int = defaults.VAL_CHECK_INTERVAL,
    limit_val_batches: Optional[int] = None,
    log_every_n_steps: int = 5,
    enable_progress_bar: bool = True,
    collective_timeout_s: int = 300,
    precision: Optional[Precision] = None,
    loop: Engine = DEFAULT_ENGINE,
    cuda_graph: bool = False,
):
    """The trainer of the engine ``loop`` names, with the strategy and precision the hardware calls for.

    Args:
        accelerator: auto (a GPU where CUDA is visible, else the CPU), gpu or cpu; decided on the node.
        devices / num_nodes: ranks per node and nodes; None = as many as the launcher started (torchrun's
            ``--nproc-per-node``/``--nnodes``, srun's tasks), 1 for a plain process. Several ranks train data
            parallel: Megatron's DDP on GPUs, torch's DDP over gloo on CPUs.
        max_steps / val_check_interval / limit_val_batches / log_every_n_steps: optimizer steps; validate every
            that many steps (and at the end) on that many batches (None: all); log every that many steps.
        collective_timeout_s: CPU ranks give up on a collective after this long (a rank or node lost).
        precision: 32, bf16-mixed or 16-mixed on a GPU (None: bf16-mixed, the seed's); a CPU trains in 32 only.
        loop: the engine — lightning (NeMo 2's ``nl.Trainer``, the seed's) or megatron (a loop of our own over
            megatron-core, as Megatron-LM and Megatron-Bridge train): see ``job/engines.py``.
        cuda_graph: the megatron loop on a GPU captures its whole training step in one CUDA graph after warm-up.
    """
    from megatron_mnist.job.world import launcher_world

    check_values("trainer", max_steps=max_steps, devices=devices, num_nodes=num_nodes,
                 val_check_interval=val_check_interval, limit_val_batches=limit_val_batches,
                 log_every_n_steps=log_every_n_steps)  # fmt: skip
    engine = engines.load(loop)
    world = launcher_world()
    check_ranks(devices, num_nodes, tuple(world), "the launcher")
    devices = world.ranks_per_node if devices is None else devices
    num_nodes = world.nodes if num_nodes is None else num_nodes
    resolved = resolve_accelerator(accelerator)
    check_graph_mode(loop, cuda_graph, resolved, precision)
    settings = TrainerSettings(
        engine=loop,
        accelerator=resolved,
        precision=resolve_precision(precision, resolved),
        devices=devices,
        num_nodes=num_nodes,
        max_steps=max_steps,
        val_check_interval=val_check_interval,
        limit_val_batches=limit_val_batches,
        log_every_n_steps=log_every_n_steps,
        enable_progress_bar=enable_progress_bar,
        collective_timeout_s=collective_timeout_s,
        cuda_graph=cuda_graph,
    )
    return engine.make_trainer(settings)


@dataclass
class Adam:
    """Adam's settings; the engine decides whose Adam applies them: Megatron's distributed Adam on a GPU (bf16 or
    fp16 parameters with fp32 main weights, or fp32 throughout), torch's on a CPU."""

    lr: float = defaults.LEARNING_RATE
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8


@dataclass(frozen=True)
class RunFolder:
    """Where a run writes (``log_dir/name``, claimed for this run) and what it keeps: the engine writes TensorBoard
    and CSV logs there, and with ``checkpoint`` the last checkpoint and the ``save_top_k`` best by val_loss."""

    name: str
    run_dir: str
    checkpoint: bool
    save_top_k: int


def logger(
    name: str = "pretrain", log_dir: str = defaults.LOG_DIR, checkpoint: bool = True, save_top_k: int = 1
) -> RunFolder:
    """The run's folder ``log_dir/name``: TensorBoard and CSV logs, checkpoints (last and best val_loss).

    Running the same name again continues that run (resume-if-exists); a run started while another of the same
    name is still running gets its own folder (``name-2``, ...) instead of writing into the other's.
    """
    from megatron_mnist.names import check_name

    check_name(name, "log.name")  # also for recipes composed in Python: the name is a folder, never a path
    from megatron_mnist.run_dirs import claim_run_dir

    return RunFolder(name=name, run_dir=claim_run_dir(log_dir, name), checkpoint=checkpoint, save_top_k=save_top_k)


@dataclass(frozen=True)
class ResumeSettings:
    resume_if_exists: bool


def resume(resume_if_exists: bool = True) -> ResumeSettings:
    """Continue from the run directory's last complete checkpoint when there is one; false starts the run afresh
    (the launcher refuses that where the folder already holds a run: use a new ``log.name``)."""
    return ResumeSettings(resume_if_exists=resume_if_exists)


# What recipes configure: the only callables a recipe's fields may name. A recipe file (``--yaml``) is code — any
# ``_target_`` is called on the node — so the launcher runs a file only if every ``_target_`` in it is one of these
# or the entry function (``launcher/config_files.py``).
BUILDERS = (model_config, mnist_data, trainer, Adam, logger, resume)
