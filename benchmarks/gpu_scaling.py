"""Data-parallel GPUs on one host: weak scaling, and a checkpoint saved on N GPUs resumed on M.

The driver (no ``--worker``) starts one torchrun per GPU count, each running the worker in every rank:

1. scaling: the pretrain recipe at a fixed per-GPU micro batch, for each model width (``--hidden``; the default
   model is 64, a wide trunk such as 4096 puts compute before launch latency). Validation once at the end, no
   checkpoints, so the figure is training steps. Steady steps/s = the median step of the second half, on rank 0.
2. reshard: on the largest count, pretrain ``--reshard-steps`` with checkpoints (global batch = micro × N); on one
   GPU, the same command with that global batch (micro × N accumulated micro-batches) ``--reshard-more`` steps
   further: it must resume from the N-GPU checkpoint. Also on one GPU, the first part again from scratch: its losses
   against the N-GPU run's (same samples per step, bf16).

Prints a table with weak-scaling efficiency = samples/s at N / (N × samples/s at 1), and the reshard checks;
``--out DIR`` gets results.json and the resumed run's last checkpoint (to predict from on a CPU).

    python benchmarks/gpu_scaling.py --gpus 1,2 --hidden 64,4096 --out /tmp/scaling
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker(args) -> None:
    import faulthandler

    faulthandler.dump_traceback_later(args.hang_s, repeat=True)  # a stuck rank shows where, in the log
    import fiddle as fdl
    import numpy as np
    import torch

    if not hasattr(np, "product"):
        # megatron-core 0.15 needs numpy<2 (the package pins it); the GPU machines' image has numpy 2, where the
        # parallel checkpoint save (used with 2+ data-parallel ranks) calls the removed np.product
        np.product = np.prod
    from gpu_pipeline import reset_megatron_state
    from gpu_throughput import StepTimer, steady_rate

    from megatron_mnist.run_logs import logged
    from recipes.pretrain import pretrain

    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    work = Path(args.work)
    results = {}

    def save(results):
        if rank == 0:  # after each stage: a later stage's failure keeps the earlier figures
            (work / f"results-{world}-{'_'.join(args.stages).replace(':', '')}.json").write_text(json.dumps(results))

    def run(name, steps, hidden=64, mbs=None, checkpoint=False, global_batch=None, val_every=None):
        mbs = mbs or args.micro_batch_size
        recipe = pretrain(name=name, log_dir=str(work / "runs"), accelerator="gpu", max_steps=steps,
                          micro_batch_size=mbs)  # fmt: skip
        recipe.model.hidden_size = hidden
        recipe.data.global_batch_size = global_batch
        recipe.trainer.val_check_interval = val_every or steps
        recipe.trainer.enable_progress_bar = False
        recipe.trainer.log_every_n_steps = 1 if checkpoint else 50
        recipe.log.checkpoint = checkpoint
        task = fdl.build(recipe)
        timer = StepTimer(steps)
        task.keywords["trainer"].callbacks.append(timer)
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        task()
        wall = time.perf_counter() - t0
        reset_megatron_state()
        return timer, wall, work / "runs" / name

    widths = dict(zip(args.hidden, args.hidden_micro_batch, strict=True))
    for hidden in [int(stage[len("scale:") :]) for stage in args.stages if stage.startswith("scale:")]:
        mbs = widths[hidden]
        timer, wall, _ = run(f"scale-h{hidden}-n{world}", args.steps, hidden=hidden, mbs=mbs)
        rate = steady_rate(timer.step_ends, timer.after_validation)
        results[f"scale h={hidden}"] = {
            "gpus": world, "hidden": hidden, "micro_batch": mbs, "steady_steps_per_s": round(rate, 1),
            "samples_per_s": round(rate * mbs * world), "first_step_s": round(timer.step_ends[0] - timer.fit_start, 2),
            "wall_s": round(wall, 1), "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20),
        }  # fmt: skip
        save(results)

    mbs, n = args.micro_batch_size, args.reshard_gpus
    if "reshard" not in args.stages:
        pass
    elif world == n:
        run("reshard", args.reshard_steps, checkpoint=True, val_every=args.reshard_steps // 2)
    elif world == 1:
        more = args.reshard_steps + args.reshard_more
        run("reshard", more, checkpoint=True, global_batch=mbs * n, val_every=args.reshard_steps // 2)
        run("reshard-1gpu", args.reshard_steps, checkpoint=True, global_batch=mbs * n,
            val_every=args.reshard_steps // 2)  # fmt: skip
        if rank == 0:
            losses = dict(logged(work / "runs" / "reshard", "train_loss"))
            single = dict(logged(work / "runs" / "reshard-1gpu", "train_loss"))
            steps = sorted(set(single) & {s for s in losses if s < args.reshard_steps})
            rel = [abs(losses[s] - single[s]) / abs(single[s]) for s in steps]
            versions = sorted(p.parent.name for p in (work / "runs" / "reshard").glob("csv_logs/*/metrics.csv"))
            results["reshard"] = {
                "saved_on_gpus": n, "resumed_on_gpus": 1, "global_batch": mbs * n,
                "csv_versions": versions, "steps_logged": len(losses),
                "first_step_after_resume": min(s for s in losses if s >= args.reshard_steps),
                "last_step": max(losses),
                f"loss_{n}gpu_vs_1gpu_max_rel_diff": round(max(rel), 5), "steps_compared": len(steps),
                f"loss_at_{args.reshard_steps - 1}": losses[args.reshard_steps - 1],
                f"loss_at_{more - 1}": losses[more - 1],
            }  # fmt: skip
    save(results)


def driver(args) -> None:
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu-scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    counts = sorted(args.gpus, reverse=True)  # the largest first: it writes the checkpoint the 1-GPU run resumes
    env = dict(os.environ, NCCL_NVLS_ENABLE="0")  # NVLink multicast off (the device machines' documentation)
    stages = [f"scale:{h}" for h in args.hidden] + ["reshard"]
    # One process runs several stages on one GPU; with several ranks, Megatron's process groups hang when built a
    # second time in one process (seen on 2 H100s), so there each stage is its own torchrun.
    multi = [stage for stage in stages if stage.split(":")[0] in args.multi_gpu_stages]
    launches = [(n, [stage]) for n in counts if n > 1 for stage in multi] + [(1, stages)] * (1 in counts)
    for n, launch_stages in launches:
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={n}", __file__, "--worker",
               "--work", str(work), *sys.argv[1:], "--stages", ",".join(launch_stages)]  # fmt: skip
        log = work / f"torchrun-{n}-{'_'.join(launch_stages).replace(':', '')}.log"
        with open(log, "w") as f:
            try:
                code = subprocess.run(
                    cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=args.launch_timeout_s
                ).returncode
            except subprocess.TimeoutExpired:
                code = 124
        print(f"{n} GPU(s) {launch_stages}: exit {code} in {time.perf_counter() - t0:.0f} s; log: {log}", flush=True)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            shutil.copy(log, args.out)
        if code:
            errors = [line for line in log.read_text().splitlines() if "Error" in line or "error" in line]
            print("\n".join(errors[:30]))
            sys.exit(code)
    results = {n: {} for n in counts}
    for path in work.glob("results-*.json"):
        results[int(path.name.split("-")[1])].update(json.loads(path.read_text()))
    print("\n| model | micro batch / GPU | GPUs | steps/s | samples/s | weak-scaling efficiency | first step s "
          "| peak MiB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for hidden in args.hidden:
        key = f"scale h={hidden}"
        base = results[min(counts)][key]["samples_per_s"] / min(counts)
        for n in sorted(counts):
            r = results[n][key]
            print(f"| hidden {hidden} | {r['micro_batch']} | {n} | {r['steady_steps_per_s']} | {r['samples_per_s']} | "
                  f"{r['samples_per_s'] / (n * base):.3f} | {r['first_step_s']} | {r['peak_gpu_mib']} |")  # fmt: skip
    if 1 in results and "reshard" in results[1]:
        print("\nreshard:", json.dumps(results[1]["reshard"], indent=1))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=1))
        last = sorted((work / "runs" / "reshard" / "checkpoints").glob("*-last"))
        if last:
            shutil.copytree(last[-1], out / "reshard-last", ignore=shutil.ignore_patterns("*.lock"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--work", default=None, help="scratch folder (default: a new temporary one)")
    p.add_argument("--gpus", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    p.add_argument("--hidden", type=lambda s: [int(x) for x in s.split(",")], default=[64, 4096])
    p.add_argument("--hidden-micro-batch", type=lambda s: [int(x) for x in s.split(",")], default=None,
                   help="micro batch per GPU for each --hidden (default: --micro-batch-size for all)")  # fmt: skip
    p.add_argument("--micro-batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--reshard-steps", type=int, default=100)
    p.add_argument("--reshard-more", type=int, default=50)
    p.add_argument("--out", default=None)
    p.add_argument("--stages", type=lambda s: s.split(","), default=[], help=argparse.SUPPRESS)
    p.add_argument("--multi-gpu-stages", type=lambda s: s.split(","), default=["scale", "reshard"],
                   help="what the multi-GPU launches run (scale, reshard)")  # fmt: skip
    p.add_argument("--launch-timeout-s", type=float, default=300)
    p.add_argument("--hang-s", type=float, default=300, help="ranks print their stacks every this many seconds")
    args = p.parse_args()
    args.hidden_micro_batch = args.hidden_micro_batch or [args.micro_batch_size] * len(args.hidden)
    args.reshard_gpus = max(args.gpus)
    sys.path.insert(0, str(HERE))
    worker(args) if args.worker else driver(args)


if __name__ == "__main__":
    main()
