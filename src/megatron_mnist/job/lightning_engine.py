"""The ``lightning`` engine: NeMo 2's way, the seed's — ``nl.Trainer.fit(LightningModule, DataModule)``.

On a GPU the trainer gets ``nl.MegatronStrategy`` (Megatron's DDP, the distributed Adam, ``torch_dist``
checkpoints) with the recipe's precision; on a CPU :class:`megatron_mnist.job.strategies.CPUStrategy` (one process)
or ``CPUDDPStrategy`` (gloo), fp32, torch's Adam. NeMo's logger writes the run folder: TensorBoard, CSV and its
``ModelCheckpoint`` (last and best by val_loss, each with its context); NeMo's ``AutoResume`` continues a run.
"""

import time
from datetime import timedelta
from functools import partial
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from megatron_mnist.job.builders import Adam, ResumeSettings, RunFolder, TrainerSettings
from megatron_mnist.job.preemption import SaveOnPreemption
from megatron_mnist.job.process import freeze_heap
from megatron_mnist.job.progress_file import ProgressWriter, writer_from_environment
from megatron_mnist.run_dirs import renamed_from


def make_trainer(settings: TrainerSettings):
    """NeMo's Trainer with the strategy and precision that the settings' hardware calls for."""
    import nemo.lightning as nl
    from lightning.pytorch.callbacks import TQDMProgressBar

    if settings.accelerator == "gpu":
        from megatron.core.distributed import DistributedDataParallelConfig

        from megatron_mnist.job.megatron_writer import use_forked_result_queue

        use_forked_result_queue()
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
        plugins = nl.MegatronMixedPrecision(precision=settings.precision)
    else:
        from megatron_mnist.job.strategies import CPUDDPStrategy, CPUStrategy

        if settings.world_size > 1:
            strategy = CPUDDPStrategy(timeout=timedelta(seconds=settings.collective_timeout_s))
        else:
            strategy = CPUStrategy()
        plugins = None
    callbacks = [SaveOnPreemption()]
    if (writer := writer_from_environment()) is not None:  # the launcher's live view reads the progress file
        callbacks.append(ProgressFile(writer))
    if settings.enable_progress_bar:
        # Redraw when there is something new to show (the logged metrics change every log_every_n_steps): a redraw
        # reads the metrics back from the GPU.
        callbacks.append(TQDMProgressBar(refresh_rate=settings.log_every_n_steps))
    trainer = nl.Trainer(
        accelerator=settings.accelerator,
        devices=settings.devices,
        num_nodes=settings.num_nodes,
        strategy=strategy,
        plugins=plugins,
        max_steps=settings.max_steps,
        # validate every val_check_interval steps across epoch boundaries (Megatron's way), and at least at the end
        val_check_interval=min(settings.val_check_interval, settings.max_steps),
        check_val_every_n_epoch=None,
        limit_val_batches=settings.limit_val_batches,
        log_every_n_steps=settings.log_every_n_steps,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # Megatron's sampler shards the data
        enable_progress_bar=settings.enable_progress_bar,
        callbacks=callbacks,
    )
    trainer.settings = settings  # what the recipe asked for, for the run's record and summary
    return trainer


def optimizer_module(optim: Adam, settings: TrainerSettings):
    """Megatron's distributed Adam under MegatronStrategy (the settings' precision: bf16 or fp16 parameters with fp32
    main weights, or fp32 throughout), torch's Adam elsewhere."""
    if settings.accelerator == "gpu":
        from megatron_mnist.job.megatron_optim import MegatronAdamModule, optimizer_config

        return MegatronAdamModule(config=optimizer_config(optim, settings.precision))
    import torch
    from nemo.lightning.pytorch.optim import PytorchOptimizerModule

    return PytorchOptimizerModule(
        optimizer_fn=partial(
            torch.optim.Adam,
            lr=optim.lr,
            weight_decay=optim.weight_decay,
            betas=(optim.adam_beta1, optim.adam_beta2),
            eps=optim.adam_eps,
        )
    )


def nemo_logger(folder: RunFolder):
    """NeMo's logger writing the run folder: TensorBoard and CSV logs, checkpoints (last and best val_loss)."""
    import nemo.lightning as nl
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    ckpt = None
    if folder.checkpoint:
        ckpt = nl.ModelCheckpoint(
            save_last=True,
            monitor="val_loss",
            mode="min",
            save_top_k=folder.save_top_k,
            always_save_context=True,
            save_optim_on_train_end=True,
            filename="{step}-{val_loss:.4f}",
        )
    return nl.NeMoLogger(
        name=folder.name,
        explicit_log_dir=folder.run_dir,
        ckpt=ckpt,
        tensorboard=TensorBoardLogger(save_dir="tb_logs", name=""),
        # a version per invocation: a resumed run adds csv_logs/version_N+1 instead of overwriting metrics.csv
        extra_loggers=[CSVLogger(save_dir=folder.run_dir, name="csv_logs")],
    )


def tidy_run_dir(trainer, run_dir: Path, started: float) -> None:
    """What a run leaves beyond its history: checkpoints that the checkpoint callback no longer tracks (a top-k
    checkpoint of a killed run, superseded after its resume), and the empty CSV version and TensorBoard file of a
    rerun that had nothing left to train (TensorBoard files written since ``started``, a ``time.time()``)."""
    import shutil

    callback = trainer.checkpoint_callback
    folder = run_dir / "checkpoints"
    if callback is not None and folder.is_dir():
        tracked = {Path(p).name.removesuffix(".ckpt") for p in [*callback.best_k_models, callback.last_model_path] if p}
        present = {path.name.removesuffix(".ckpt") for path in folder.iterdir()}
        # only where the callback's names are the names on disk: a naming this code does not know deletes nothing
        if tracked and tracked <= present:
            for path in folder.iterdir():
                stem = path.name.removesuffix(".ckpt").removesuffix("-unfinished")
                if stem.startswith("step=") and stem not in tracked:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
    for logger in trainer.loggers:
        csv_file = Path(getattr(logger, "log_dir", "") or "") / "metrics.csv"
        if type(logger).__name__ == "CSVLogger" and not (
            csv_file.is_file() and len(csv_file.read_text().splitlines()) > 1
        ):
            shutil.rmtree(csv_file.parent, ignore_errors=True)  # this invocation logged nothing
            for events in (run_dir / "tb_logs").glob("**/events.out.tfevents.*"):
                if events.stat().st_mtime >= started and events.stat().st_size < 1024:
                    events.unlink()


def train(model, data, trainer, optim: Adam, log: RunFolder, resume: ResumeSettings, seed: int) -> dict | None:
    """Fit; the run's summary on global rank 0 (None on the other ranks)."""
    import lightning.pytorch as pl
    from nemo.lightning.callback_group import CallbackGroup

    from megatron_mnist.job.checkpoint import Resume
    from megatron_mnist.job.lightning import MNISTLightningModule

    fresh_batch_calculator()
    if trainer.settings.accelerator == "gpu":
        # NeMo's Megatron step imports nemo.collections.llm (for its distillation hooks) on the first step: 2 s of
        # imports inside fit(). Import it with the rest of the stack instead.
        import nemo.collections.llm  # noqa: F401

    started = time.time()
    pl.seed_everything(seed, workers=True)
    module = MNISTLightningModule(model, optim=optimizer_module(optim, trainer.settings))
    app_state = nemo_logger(log).setup(trainer, resume_if_exists=resume.resume_if_exists)
    # NeMo's telemetry callback is live on rank 0 of a multi-rank run and fails its first checkpoint unless told
    # about the run first, as NeMo's own `llm.train` does here.
    CallbackGroup.get_instance().update_config(nemo_version="v2", trainer=trainer, data=data)
    Resume(resume_if_exists=resume.resume_if_exists, resume_ignore_no_checkpoint=True).setup(trainer, module)
    freeze_heap()
    trainer.fit(module, data)
    run_dir = Path(app_state.log_dir).resolve()
    if not trainer.is_global_zero:
        return None
    tidy_run_dir(trainer, run_dir, started)
    stopped = [c.signals.stopped_by for c in trainer.callbacks if isinstance(c, SaveOnPreemption)]
    return {
        "run_dir": str(run_dir),
        "step": trainer.global_step,
        "max_steps": trainer.max_steps,
        "stopped_by": next(iter(stopped), None),
        "train_loss": metric(trainer, "train_loss"),
        "val_loss": metric(trainer, "val_loss"),
        "renamed_from": renamed_from(run_dir),
    }


def predict(model, data, trainer, log: RunFolder) -> tuple[Path, dict]:
    """This rank's predictions: (run folder, {key: tensor} of the digits it predicted)."""
    import torch

    from megatron_mnist.job.lightning import MNISTLightningModule

    # The module always carries an optimizer (NeMo's strategies set it up); prediction never steps it.
    module = MNISTLightningModule(model, optim=optimizer_module(Adam(), trainer.settings))
    app_state = nemo_logger(log).setup(trainer)
    fresh_batch_calculator()
    freeze_heap()
    batches = trainer.predict(module, datamodule=data)
    # reconstructions are large and recomputable: keep what a report needs
    shard = {key: torch.cat([b[key].detach().cpu() for b in batches]) for key in batches[0] if key != "x_hat"}
    return Path(app_state.log_dir), shard


def fresh_batch_calculator() -> None:
    """Megatron's micro-batch calculator is a process global that NeMo's data sampler sets once and afterwards only
    asserts on: a stage after another in one process (a one-job pipeline: predict's batch after finetune's, seen on
    the H200) starts from none, as a job of its own does."""
    from megatron.core.num_microbatches_calculator import destroy_num_microbatches_calculator

    destroy_num_microbatches_calculator()


def metric(trainer, name: str) -> float | None:
    """A metric a Lightning trainer logged, as a float (a device sync on GPU), None where not logged."""
    value = trainer.callback_metrics.get(name)
    return None if value is None else float(value)


class ProgressFile(Callback):
    """This engine's feed of the progress file (``job/progress_file.py``), from global rank 0."""

    def __init__(self, writer: ProgressWriter):
        self.writer = writer
        self._val_loss = None

    def write(self, trainer, state: str) -> None:
        if trainer.is_global_zero:
            self.writer.write(state, trainer.global_step, trainer.max_steps, metric(trainer, "train_loss"),
                              self._val_loss)  # fmt: skip

    def on_train_start(self, trainer, pl_module):
        self.write(trainer, "training")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.writer.due():
            self.write(trainer, "training")

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._val_loss = metric(trainer, "val_loss")
            self.write(trainer, "training")

    def on_train_end(self, trainer, pl_module):
        self.write(trainer, "done")
