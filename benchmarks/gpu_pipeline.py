"""GPU check: the default pipeline on one GPU with MegatronStrategy + bf16-mixed, through the package's recipes.

Stages, in one process: pretrain → the same pretrain command again with more steps (must resume from the Megatron
distributed checkpoint, not start over) → finetune from the pretrain checkpoint → predict. Prints, per training
stage, steady steps/s (median of the step-to-step times outside validation), the time from fit() to the end of the
first step, the final val loss and peak GPU memory; then the held-out accuracy. Writes the figures as JSON to --json.
(Prediction on a CPU from a GPU checkpoint is covered by the tests, with a checkpoint this script's pretrain wrote:
it needs a fresh process, since Lightning's CPU predict loop finds no data fetcher after Megatron stages.)

    python benchmarks/gpu_pipeline.py --log-dir /tmp/gpu_runs --json gpu_pipeline.json
"""

import argparse
import json
import statistics
import time
from itertools import pairwise
from pathlib import Path

import fiddle as fdl
import lightning.pytorch as pl
import torch

from megatron_mnist_recipes.finetune import finetune
from megatron_mnist_recipes.predict import predict
from megatron_mnist_recipes.pretrain import pretrain


class StepTimer(pl.Callback):
    """Wall-clock times of the training steps, and of fit's start (the setup hook runs first thing in fit)."""

    def __init__(self):
        self.fit_start = None
        self.step_ends: list[float] = []
        self.after_validation: set[int] = set()  # indices of step intervals that include a validation

    def setup(self, trainer, pl_module, stage):
        self.fit_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        torch.cuda.synchronize()
        self.step_ends.append(time.perf_counter())

    def on_validation_end(self, trainer, pl_module):
        self.after_validation.add(len(self.step_ends))

    def figures(self) -> dict:
        intervals = [
            b - a for i, (a, b) in enumerate(pairwise(self.step_ends), start=1) if i not in self.after_validation
        ]
        steady = intervals[len(intervals) // 2 :]  # the second half: past warm-up
        return {
            "steps": len(self.step_ends),
            "first_step_s": round(self.step_ends[0] - self.fit_start, 3),
            "steady_steps_per_s": round(1 / statistics.median(steady), 1),
            "train_wall_s": round(self.step_ends[-1] - self.fit_start, 2),
        }


def reset_megatron_state():
    """Between stages in one process: Megatron's global parallel state and microbatch calculator."""
    import megatron.core.num_microbatches_calculator as microbatches
    from megatron.core import parallel_state

    microbatches._GLOBAL_NUM_MICROBATCHES_CALCULATOR = None
    if parallel_state.is_initialized():
        parallel_state.destroy_model_parallel()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def train_stage(recipe) -> dict:
    recipe.trainer.enable_progress_bar = False
    task = fdl.build(recipe)
    trainer = task.keywords["trainer"]
    timer = StepTimer()
    trainer.callbacks.append(timer)
    run_dir = task()
    figures = timer.figures()
    figures["final_global_step"] = trainer.global_step
    figures["final_val_loss"] = round(float(trainer.callback_metrics["val_loss"]), 5)
    figures["peak_gpu_mem_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    figures["run_dir"] = run_dir
    reset_megatron_state()
    return figures


def predict_stage(recipe) -> dict:
    t0 = time.perf_counter()
    out = fdl.build(recipe)()
    metrics = json.loads((Path(out).parent / "metrics.json").read_text())
    reset_megatron_state()
    return {
        "accuracy": round(metrics["accuracy"], 4),
        "digits": metrics["num_digits"],
        "wall_s": round(time.perf_counter() - t0, 2),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-dir", default="/tmp/gpu_runs")
    parser.add_argument("--max-steps", type=int, default=500, help="pretrain and finetune steps (the defaults)")
    parser.add_argument("--resume-steps", type=int, default=100, help="steps the resumed pretrain adds")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()
    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    t0 = time.perf_counter()

    results["pretrain"] = train_stage(pretrain(log_dir=args.log_dir, accelerator="gpu", max_steps=args.max_steps))
    print("pretrain", results["pretrain"], flush=True)
    resumed = pretrain(log_dir=args.log_dir, accelerator="gpu", max_steps=args.max_steps + args.resume_steps)
    results["pretrain_resumed"] = train_stage(resumed)
    results["pretrain_resumed"]["resumed_from_step"] = (
        results["pretrain_resumed"]["final_global_step"] - results["pretrain_resumed"]["steps"]
    )
    print("pretrain resumed", results["pretrain_resumed"], flush=True)
    results["finetune"] = train_stage(
        finetune(
            pretrain_checkpoint=f"{args.log_dir}/pretrain",
            log_dir=args.log_dir,
            accelerator="gpu",
            max_steps=args.max_steps,
        )
    )
    print("finetune", results["finetune"], flush=True)
    results["predict_gpu"] = predict_stage(
        predict(checkpoint=f"{args.log_dir}/finetune", log_dir=args.log_dir, accelerator="gpu", name="predict_gpu")
    )
    print("predict on GPU", results["predict_gpu"], flush=True)
    results["pipeline_wall_s"] = round(time.perf_counter() - t0, 1)

    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":  # required: Megatron's checkpoint save spawns processes that re-import __main__
    main()
