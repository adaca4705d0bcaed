"""``train`` and ``predict``: the functions recipes point at. Read top to bottom, this is the whole run."""

import json
import time
from pathlib import Path

from megatron_mnist.job.builders import Adam
from megatron_mnist.job_protocol import RESULT_MARK
from megatron_mnist.run_dirs import renamed_from


def print_result(trainer, **fields) -> None:
    """One line for the launcher's summary (``megatron_mnist.launcher.submission.job_summary``), from global rank 0."""
    if trainer.is_global_zero:
        print(RESULT_MARK + json.dumps(fields), flush=True)


def metric(trainer, name: str) -> float | None:
    """A logged metric as a float (a device sync on GPU), None where not logged."""
    value = trainer.callback_metrics.get(name)
    return None if value is None else float(value)


def freeze_heap() -> None:
    """Exempt everything imported so far from garbage collection.

    NeMo, Megatron and Lightning leave millions of long-lived objects on the heap. Python's periodic full
    collections walk all of them (0.7 s each, a stall every few hundred steps), and Megatron's checkpoint save calls
    ``gc.collect()`` twice per save. Frozen, they are skipped; what training allocates is still collected.
    """
    import gc

    gc.collect()
    gc.freeze()


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


def train(model, data, trainer, optim: Adam, log, resume, seed: int = 1234) -> str:
    """Train ``model`` (a config from ``builders.model_config``) on ``data``; returns the run directory.

    The run directory (``log``'s) receives TensorBoard and CSV logs and checkpoints; with ``resume``, running the
    same command again continues from its last checkpoint.
    """
    import lightning.pytorch as pl
    from nemo.lightning.callback_group import CallbackGroup
    from nemo.lightning.pytorch.strategies import MegatronStrategy

    from megatron_mnist.job.lightning import MNISTLightningModule

    megatron = isinstance(trainer.strategy, MegatronStrategy)
    if megatron:
        # NeMo's Megatron step imports nemo.collections.llm (for its distillation hooks) on the first step: 2 s of
        # imports inside fit(). Import it with the rest of the stack instead.
        import nemo.collections.llm  # noqa: F401

    started = time.time()
    pl.seed_everything(seed, workers=True)
    module = MNISTLightningModule(model, optim=optim.module(megatron=megatron))
    app_state = log.setup(trainer, resume_if_exists=resume.resume_if_exists)
    # NeMo's telemetry callback is live on rank 0 of a multi-rank run and fails its first checkpoint unless told
    # about the run first, as NeMo's own `llm.train` does here.
    CallbackGroup.get_instance().update_config(nemo_version="v2", trainer=trainer, data=data)
    resume.setup(trainer, module)
    freeze_heap()
    trainer.fit(module, data)
    run_dir = Path(app_state.log_dir).resolve()
    if trainer.is_global_zero:
        tidy_run_dir(trainer, run_dir, started)
    print_result(
        trainer,
        run_dir=str(run_dir),
        step=trainer.global_step,
        train_loss=metric(trainer, "train_loss"),
        val_loss=metric(trainer, "val_loss"),
        renamed_from=renamed_from(run_dir),
    )
    return str(app_state.log_dir)


def gather_predictions(shard: dict):
    """All ranks' predictions on rank 0 (None on the others), one row per held-out digit in the dataset's order.

    Megatron's sampler gives each data-parallel rank its own slice of every global batch and pads the last global
    batch with negative indices (items counted from the end): drop those and any repeat, then sort by ``idx``.
    """
    import torch
    import torch.distributed as dist

    shards = [shard]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        shards = [None] * dist.get_world_size()
        dist.all_gather_object(shards, shard)  # small (2,000 × 15 numbers for the sample); gloo and NCCL alike
        if dist.get_rank() != 0:
            return None
    merged = {key: torch.cat([s[key] for s in shards]) for key in shards[0]}
    idx = merged["idx"]
    order = torch.argsort(idx, stable=True)
    first = torch.ones_like(order, dtype=torch.bool)
    first[1:] = idx[order][1:] != idx[order][:-1]
    keep = order[first & (idx[order] >= 0)]
    return {key: value[keep] for key, value in merged.items()}


def predict(model, data, trainer, log, output: str = "predictions.pt", report: bool = True) -> str:
    """Run ``model`` (its ``initial_ckpt_path`` names the trained weights) over the held-out digits.

    Writes ``output`` in the run directory: ``digit_logits`` [N, 10] (with a classifier), ``z`` [N, 3], ``label``
    and ``idx``; ``metrics.json`` with the accuracy; with ``report``, the report (``megatron_mnist.report``) of
    the runs in the folder that holds this one, in ``report/``. Returns the path of the predictions file.
    """
    import torch
    from nemo.lightning.pytorch.strategies import MegatronStrategy

    from megatron_mnist.job.lightning import MNISTLightningModule

    if not model.initial_ckpt_path:
        raise ValueError("predict needs model.initial_ckpt_path: the checkpoint (or run directory) to predict with")
    model.initial_ckpt_skip_keys_with_these_prefixes = []  # every weight comes from the checkpoint
    # The module always carries an optimizer (NeMo's strategies set it up); prediction never steps it.
    module = MNISTLightningModule(model, optim=Adam().module(megatron=isinstance(trainer.strategy, MegatronStrategy)))
    app_state = log.setup(trainer)
    freeze_heap()
    batches = trainer.predict(module, datamodule=data)
    run_dir = Path(app_state.log_dir)
    # reconstructions are large and recomputable: keep what a report needs
    shard = {key: torch.cat([b[key].detach().cpu() for b in batches]) for key in batches[0] if key != "x_hat"}
    predictions = gather_predictions(shard)  # every rank predicted its shard; rank 0 gets them all
    if predictions is None:
        return str(run_dir / output)
    torch.save(predictions, run_dir / output)
    metrics = {"num_digits": len(predictions["label"]), "checkpoint": str(model.initial_ckpt_path)}
    if "digit_logits" in predictions:
        correct = predictions["digit_logits"].argmax(-1) == predictions["label"]
        metrics["accuracy"] = correct.float().mean().item()
        print(f"held-out accuracy: {metrics['accuracy']:.4f} on {metrics['num_digits']} digits")
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    index = None
    if report:
        # the runs beside this one: in a pipeline's folder, its pretrain and finetune. The predictions are written
        # already; a report that cannot be made (matplotlib missing included) is a warning, not a failed job.
        try:
            from megatron_mnist.report import write_report

            index = write_report(run_dir.parent, run_dir / "report")
            print(f"report: {index}")
        except Exception as e:
            print(f"WARNING: no report: {type(e).__name__}: {e} (python launch.py report {run_dir.parent})")
    run_dir = run_dir.resolve()
    print_result(
        trainer,
        run_dir=str(run_dir),
        predictions=str(run_dir / output),
        num_digits=metrics["num_digits"],
        accuracy=metrics.get("accuracy"),
        report=str(Path(index).resolve()) if index else None,
        renamed_from=renamed_from(run_dir),
    )
    return str(run_dir / output)
