"""The pieces a recipe configures, as small typed factories.

A recipe is a ``run.Partial`` whose fields are ``run.Config``s of these functions. Each imports the training stack
only when it is called — on the node that runs the job — so composing, printing, overriding and submitting a
recipe never imports torch, NeMo or Megatron (the launcher's dry run takes about a second instead of ten).

The one place that knows about hardware is :func:`resolve_accelerator`: on a GPU the trainer gets
``nl.MegatronStrategy`` with bf16 mixed precision and the optimizer Megatron's distributed Adam; on a CPU the
trainer gets :class:`megatron_mnist.job.strategies.CPUStrategy` in fp32 and the optimizer torch's Adam.
"""

import math
import typing
from dataclasses import dataclass
from functools import partial
from typing import Literal, Optional

from megatron_mnist.model.spec import Task, spec_of

Accelerator = Literal["auto", "gpu", "cpu"]

# This package's training defaults, stated once (the builders' and the recipes' defaults are these). The seed
# tutorial (BioNeMo's example_model) trains 100 steps at Adam lr 1e-4 and validates every 5 steps: a demonstration
# run. Ours are chosen for a run a user looks at: the default pipeline reaches ~0.83 held-out accuracy on the
# embedded sample (README), and a validation (with its checkpoint save) every 50 steps rather than every 5 keeps
# them a small part of the run's time. The seed's settings: `launch.py pretrain trainer.max_steps=100
# trainer.val_check_interval=5 optim.lr=1e-4` (and the same for finetune).
MAX_STEPS = 500
LEARNING_RATE = 1e-3
VAL_CHECK_INTERVAL = 50

ACCELERATORS = typing.get_args(Accelerator)


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# Each value constraint of the builders' arguments, declared once: the builders check it on the node (a recipe
# composed in Python never met the launcher), the launcher's pre-submit checks (launcher/recipe_checks.py) before
# anything is submitted. Constraints that need the data or the ranks (val_size against the dataset, the global
# batch against the ranks) are checked where those are known.
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
    """ValueError naming ``key=value`` and what it must be, unless ``value`` is None (unset) or meets its constraint."""
    holds, expected = CONSTRAINTS[key]
    if value is not None and not holds(value):
        raise ValueError(f"{key}={value!r} {expected}")


def check_values(section: str, **values) -> None:
    """:func:`check_value` for a builder's arguments: ``check_values("data", micro_batch_size=64)``."""
    for name, value in values.items():
        check_value(f"{section}.{name}", value)


def resolve_accelerator(accelerator: str) -> str:
    """ "auto" → "gpu" where CUDA is visible, else "cpu"; "gpu" without a GPU is an error."""
    import torch

    if accelerator not in ACCELERATORS:
        raise ValueError(f"trainer.accelerator={accelerator!r} is not one of {', '.join(ACCELERATORS)}")
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise ValueError("trainer.accelerator=gpu but this machine has no CUDA GPU (use auto or cpu)")
    return accelerator


def model_config(
    task: Task = "pretrain",
    hidden_size: int = 64,
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
    micro_batch_size: int = 64,
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
    if global_batch_size is None:
        # one micro-batch per data-parallel rank (every rank is data parallel: no tensor or pipeline parallelism)
        global_batch_size = micro_batch_size * launcher_world().size
    return MNISTDataModule(
        root=root,
        micro_batch_size=micro_batch_size,
        global_batch_size=global_batch_size,
        val_size=val_size,
        num_workers=num_workers,
        device_resident=device_resident,
        download=download,
    )


def trainer(
    accelerator: Accelerator = "auto",
    devices: Optional[int] = None,
    num_nodes: Optional[int] = None,
    max_steps: int = MAX_STEPS,
    val_check_interval: int = VAL_CHECK_INTERVAL,
    limit_val_batches: Optional[int] = None,
    log_every_n_steps: int = 5,
    enable_progress_bar: bool = True,
    collective_timeout_s: int = 300,
):
    """NeMo's Trainer with the strategy and precision the hardware calls for (see the module docstring).

    Args:
        devices / num_nodes: ranks per node and nodes; None = as many as the launcher started (torchrun's
            ``--nproc-per-node``/``--nnodes``, srun's tasks), 1 for a plain process. Several ranks train data
            parallel: Megatron's DDP on GPUs, ``CPUDDPStrategy`` (gloo) on CPUs.
        collective_timeout_s: CPU ranks give up on a collective after this long (a rank or node lost).
    """
    import nemo.lightning as nl
    from lightning.pytorch.callbacks import TQDMProgressBar

    from megatron_mnist.job.preemption import SaveOnPreemption
    from megatron_mnist.job.world import launcher_world

    check_values("trainer", max_steps=max_steps, devices=devices, num_nodes=num_nodes,
                 val_check_interval=val_check_interval, limit_val_batches=limit_val_batches,
                 log_every_n_steps=log_every_n_steps)  # fmt: skip
    world = launcher_world()
    devices = world.ranks_per_node if devices is None else devices
    num_nodes = world.nodes if num_nodes is None else num_nodes
    if (devices, num_nodes) != tuple(world):
        raise ValueError(
            f"trainer.devices={devices} trainer.num_nodes={num_nodes} but the launcher started {world.ranks_per_node} "
            f"rank(s) per node on {world.nodes} node(s): leave them unset, or launch that many "
            "(executor.ntasks_per_node / executor.nodes)"
        )
    resolved = resolve_accelerator(accelerator)
    if resolved == "gpu":
        from megatron_mnist.job.megatron_writer import use_forked_result_queue

        use_forked_result_queue()
        from megatron.core.distributed import DistributedDataParallelConfig

        strategy = nl.MegatronStrategy(
            tensor_model_parallel_size=1,
            pipeline_model_parallel_size=1,
            # NeMo's ddp="megatron" also turns on check_for_nan_in_grad: a norm and a blocking read of it per step,
            # which stops the host from running ahead of the GPU (the step is host-bound). A NaN still shows, in
            # the logged train_loss and val_loss.
            ddp=DistributedDataParallelConfig(check_for_nan_in_grad=False),
            # keep our progress bar (refreshed every log_every_n_steps); NeMo would put a printer in its place that
            # reads the metrics back from the GPU and gathers Megatron's timers every step
            replace_progress_bar=False,
            ckpt_async_save=False,
            # The default (dp_reshardable) optimizer format fails to save torch Adam's scalar `step` state, which is
            # what Megatron uses without Apex / Transformer Engine; the fully reshardable format handles it.
            ckpt_optim_fully_reshardable=True,
            # the state dict's structure never changes within a run: reuse the save plan after the first save
            ckpt_assume_constant_structure=True,
        )
        # The module logs train_loss itself; NeMo's copy (reduced_train_loss) would cost a second log call per step.
        strategy.log_train_loss = False
        plugins = nl.MegatronMixedPrecision(precision="bf16-mixed")
    else:
        from datetime import timedelta

        from megatron_mnist.job.strategies import CPUDDPStrategy, CPUStrategy

        if world.size > 1:
            strategy = CPUDDPStrategy(timeout=timedelta(seconds=collective_timeout_s))
        else:
            strategy = CPUStrategy()
        plugins = None
    from megatron_mnist.job.progress_file import from_environment

    callbacks = [SaveOnPreemption(), *from_environment()]  # the launcher's live view reads the progress file
    if enable_progress_bar:
        # Redraw when there is something new to show (the logged metrics change every log_every_n_steps): a redraw
        # reads the metrics back from the GPU.
        callbacks.append(TQDMProgressBar(refresh_rate=log_every_n_steps))
    return nl.Trainer(
        accelerator=resolved,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        plugins=plugins,
        max_steps=max_steps,
        # validate every val_check_interval steps across epoch boundaries (Megatron's way), and at least at the end
        val_check_interval=min(val_check_interval, max_steps),
        check_val_every_n_epoch=None,
        limit_val_batches=limit_val_batches,
        log_every_n_steps=log_every_n_steps,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # Megatron's sampler shards the data
        enable_progress_bar=enable_progress_bar,
        callbacks=callbacks,
    )


@dataclass
class Adam:
    """Adam's settings; the strategy decides whose Adam applies them (see :meth:`module`)."""

    lr: float = LEARNING_RATE
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8

    def module(self, megatron: bool):
        """Megatron's distributed Adam (bf16 params, fp32 main weights) under MegatronStrategy, torch's elsewhere."""
        check_values("optim", lr=self.lr, weight_decay=self.weight_decay, adam_beta1=self.adam_beta1,
                     adam_beta2=self.adam_beta2, adam_eps=self.adam_eps)  # fmt: skip

        if megatron:
            from megatron.core.optimizer import OptimizerConfig

            from megatron_mnist.job.megatron_optim import MegatronAdamModule

            return MegatronAdamModule(
                config=OptimizerConfig(
                    optimizer="adam",
                    lr=self.lr,
                    weight_decay=self.weight_decay,
                    adam_beta1=self.adam_beta1,
                    adam_beta2=self.adam_beta2,
                    adam_eps=self.adam_eps,
                    bf16=True,
                    use_distributed_optimizer=True,
                    # No clipping, as torch's Adam on the CPU path (Megatron's default clips at 1.0, which also
                    # costs a grad-norm reduction and a log call every step).
                    clip_grad=0.0,
                )
            )
        import torch
        from nemo.lightning.pytorch.optim import PytorchOptimizerModule

        return PytorchOptimizerModule(
            optimizer_fn=partial(
                torch.optim.Adam,
                lr=self.lr,
                weight_decay=self.weight_decay,
                betas=(self.adam_beta1, self.adam_beta2),
                eps=self.adam_eps,
            )
        )


def logger(name: str = "pretrain", log_dir: str = "runs", checkpoint: bool = True, save_top_k: int = 1):
    """NeMo's logger writing ``log_dir/name``: TensorBoard and CSV logs, checkpoints (last and best val_loss).

    Running the same name again continues that run (resume-if-exists); a run started while another of the same
    name is still running gets its own folder (``name-2``, ...) instead of writing into the other's.
    """
    from megatron_mnist.names import check_name

    check_name(name, "log.name")  # also for recipes composed in Python: the name is a folder, never a path
    import nemo.lightning as nl
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from megatron_mnist.run_dirs import claim_run_dir

    run_dir = claim_run_dir(log_dir, name)
    ckpt = None
    if checkpoint:
        ckpt = nl.ModelCheckpoint(
            save_last=True,
            monitor="val_loss",
            mode="min",
            save_top_k=save_top_k,
            always_save_context=True,
            save_optim_on_train_end=True,
            filename="{step}-{val_loss:.4f}",
        )
    return nl.NeMoLogger(
        name=name,
        explicit_log_dir=run_dir,
        ckpt=ckpt,
        tensorboard=TensorBoardLogger(save_dir="tb_logs", name=""),
        # a version per invocation: a resumed run adds csv_logs/version_N+1 instead of overwriting metrics.csv
        extra_loggers=[CSVLogger(save_dir=run_dir, name="csv_logs")],
    )


def resume(resume_if_exists: bool = True):
    """Continue from the run directory's last checkpoint when there is one (NeMo's AutoResume, CPU-capable)."""
    from megatron_mnist.job.checkpoint import Resume

    return Resume(resume_if_exists=resume_if_exists, resume_ignore_no_checkpoint=True)


# What recipes configure: the only callables a recipe's fields may name. A recipe file (``--yaml``) is code — any
# ``_target_`` is called on the node — so the launcher runs a file only if every ``_target_`` in it is one of these
# or the entry function (``launcher/config_files.py``).
BUILDERS = (model_config, mnist_data, trainer, Adam, logger, resume)
