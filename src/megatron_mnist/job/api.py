"""``train`` and ``predict``: the functions recipes point at. Read top to bottom, this is the whole run."""

import json
import os
from collections.abc import Callable
from pathlib import Path

from megatron_mnist import defaults, run_record
from megatron_mnist.checkpoint_paths import resolve_checkpoint
from megatron_mnist.job import engines
from megatron_mnist.job.builders import Adam, ResumeSettings, RunFolder
from megatron_mnist.job.progress_file import note
from megatron_mnist.job_protocol import RESULT_MARK, STAGE_ENV, STAGE_MARK
from megatron_mnist.run_dirs import global_rank, renamed_from

_last_result: dict = {}  # what this process printed last (in_one_process reads whether a signal stopped a stage)


def print_result(**fields) -> None:
    """One line for the launcher's summary (``megatron_mnist.launcher.submission.job_summary``); the engines return
    the fields on global rank 0 only."""
    _last_result.clear()
    _last_result.update(fields)
    print(RESULT_MARK + json.dumps(fields), flush=True)


def in_one_process(stages: dict[str, Callable[[], object]]) -> None:
    """A pipeline's stages one after the other in this process (``launch.py pipeline``'s one job): the start-up —
    Python, torch, NeMo's import, CUDA — paid once, not once per stage. Each stage is its own recipe (a ``train`` or
    ``predict`` partial) and writes the run folder it writes as a job of its own. A stage that raises ends the job
    (the later stages never start); one that a signal stopped (Ctrl-C, ``cancel``, a preemption: its checkpoint
    saved) ends it too. The launcher reads each stage's result from the lines after its mark."""
    for name, stage in stages.items():
        if global_rank() == 0:  # as the result lines: each rank's output reaches the log interleaved
            print(STAGE_MARK + name, flush=True)
        os.environ[STAGE_ENV] = name  # the progress file says which stage the steps are of
        _last_result.clear()
        stage()
        if _last_result.get("stopped_by"):
            print(f"{name} was stopped by {_last_result['stopped_by']}: the stages after it do not run", flush=True)
            return


def train(model, data, trainer, optim: Adam, log: RunFolder, resume: ResumeSettings, seed: int = defaults.SEED) -> str:
    """Train ``model`` (a config from ``builders.model_config``) on ``data`` with the engine that built ``trainer``
    (``builders.trainer``'s ``loop``); returns the run directory.

    The run directory (``log``'s) receives TensorBoard and CSV logs and checkpoints; with ``resume``, running the
    same command again continues from its last checkpoint.
    """
    settings = trainer.settings
    facts = {"engine": settings.engine, "accelerator": settings.accelerator, "precision": settings.precision,
             "micro_batch_size": data.micro_batch_size, "global_batch_size": data.global_batch_size}  # fmt: skip
    # the launcher checked this where it could see the folder; a cluster's folder, or Python's submit, meets it here
    resumed_at = run_record.check_continuation(log.run_dir, facts, settings.max_steps, resume.resume_if_exists)
    if global_rank() == 0:
        run_record.write(log.run_dir, facts)
    note("building the model and data")
    summary = engines.of(trainer).train(model, data, trainer, optim, log, resume, seed)
    if summary is not None:
        start = {"resumed_at": resumed_at}
        if model.initial_ckpt_path and resumed_at is None:  # which weights it started from, said on the console
            start["initial_weights"] = str(resolve_checkpoint(model.initial_ckpt_path).resolve())
            start["fresh"] = list(model.initial_ckpt_skip_keys_with_these_prefixes)
        print_result(**summary, **start, engine=settings.engine, precision=settings.precision)
    return log.run_dir


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


def predict(model, data, trainer, log: RunFolder, output: str = "predictions.pt", report: bool = True) -> str:
    """Run ``model`` (its ``initial_ckpt_path`` names the trained weights) over the held-out digits.

    Writes ``output`` in the run directory: ``digit_logits`` [N, 10] (with a classifier), ``z`` [N, 3], ``label``
    and ``idx``; ``metrics.json`` with the accuracy; with ``report``, the report (``megatron_mnist.report``) of
    the runs in the folder that holds this one, in ``report/``. Returns the path of the predictions file.
    """
    import torch

    if not model.initial_ckpt_path:
        raise ValueError("predict needs model.initial_ckpt_path: the checkpoint (or run directory) to predict with")
    model.initial_ckpt_skip_keys_with_these_prefixes = []  # every weight comes from the checkpoint
    note("predicting")
    run_dir, shard = engines.of(trainer).predict(model, data, trainer, log)
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
        note("writing the report")
        try:
            from megatron_mnist.report import write_report

            index = write_report(run_dir.parent, run_dir / "report")
            print(f"report: {index}")
        except Exception as e:
            print(f"WARNING: no report: {type(e).__name__}: {e} (python launch.py report {run_dir.parent})")
    run_dir = run_dir.resolve()
    print_result(
        run_dir=str(run_dir),
        predictions=str(run_dir / output),
        num_digits=metrics["num_digits"],
        accuracy=metrics.get("accuracy"),
        report=str(Path(index).resolve()) if index else None,
        renamed_from=renamed_from(run_dir),
        engine=trainer.settings.engine,
    )
    return str(run_dir / output)
