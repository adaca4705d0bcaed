"""Data-parallel GPUs on one host: weak scaling with spread, beside a plain PyTorch DDP loop; N → 1 GPU reshard.

The driver (no ``--worker``) starts torchruns; each rank runs the worker.

1. scaling: for each model width (``--hidden``; the default model is 64, a wide trunk such as 4096 puts compute
   before launch latency) at a fixed micro batch per GPU, on each GPU count: the pretrain recipe (validation once at
   the end, no checkpoints: training steps), then, in the same processes, a plain PyTorch DDP loop of the same model
   (NCCL, GPU-resident data, bf16 autocast, Adam) — the peer. Every count is launched ``--repeats`` times,
   interleaved (1, 2, 1, 2, ...): launches on one host differ by up to 2.7×, so one launch per count cannot tell a
   regression from noise. Steady steps/s: the second half of the steps. Each rank also records its per-step host
   intervals (percentiles) and its share of the step spent waiting (where a slow rank or a slow launch shows).
2. reshard (``--reshard``): on the largest count, pretrain ``--reshard-steps`` with checkpoints; on one GPU the same
   command with that global batch ``--reshard-more`` steps further (it must resume), and the first part again from
   scratch to compare losses.

Prints min / median / max steps/s per width, count and loop, and weak-scaling efficiency = median samples/s at N /
(N × median samples/s at 1); ``--out DIR`` gets results.json and the launch logs.

    python benchmarks/gpu_scaling.py --gpus 1,2 --hidden 64,4096 --hidden-micro-batch 64,1024 --repeats 3 --out DIR
"""

import argparse
import functools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PERCENTILES = (10, 50, 90, 99)


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
    from megatron_mnist_recipes.pretrain import pretrain

    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    work = Path(args.work)
    results = {}
    tag = f"{world}-{'_'.join(args.stages).replace(':', '')}-r{args.repeat}"

    def save(results):
        # every rank, after each stage: a later stage's failure keeps the earlier figures
        (work / f"results-{tag}-rank{rank}.json").write_text(json.dumps(results))

    def run(name, steps, hidden=64, mbs=None, checkpoint=False, global_batch=None, val_every=None, then=None):
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
        peer = then() if then else None  # on the recipe's process group: NCCL re-initialised in one process failed
        reset_megatron_state()
        return timer, wall, work / "runs" / name, peer

    widths = dict(zip(args.hidden, args.hidden_micro_batch, strict=True))
    for hidden in [int(stage[len("scale:") :]) for stage in args.stages if stage.startswith("scale:")]:
        mbs = widths[hidden]
        timer, wall, _, peer = run(f"scale-h{hidden}-n{world}-r{args.repeat}", args.steps, hidden=hidden, mbs=mbs,
                                   then=functools.partial(plain_ddp, hidden, mbs, args.steps))  # fmt: skip
        rate = steady_rate(timer.step_ends, timer.after_validation)
        results[f"recipe h={hidden}"] = {
            "gpus": world, "hidden": hidden, "micro_batch": mbs, "steps_per_s": round(rate, 1),
            "first_step_s": round(timer.step_ends[0] - timer.fit_start, 2), "wall_s": round(wall, 1),
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20),
            "step_ms": step_percentiles(timer.step_ends),
        }  # fmt: skip
        results[f"ddp h={hidden}"] = peer
        save(results)

    mbs, n = args.micro_batch_size, args.reshard_gpus
    if "reshard" not in args.stages:
        return
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


def step_percentiles(step_ends: list[float]) -> dict:
    """Host intervals between step ends over the second half, in ms: p10/p50/p90/p99 and max."""
    import numpy as np

    half = step_ends[len(step_ends) // 2 :]
    intervals = np.diff(np.array(half)) * 1e3
    figures = {f"p{q}": round(float(np.percentile(intervals, q)), 2) for q in PERCENTILES}
    figures["max"] = round(float(intervals.max()), 2)
    return figures


def plain_ddp(hidden: int, micro_batch: int, steps: int) -> dict:
    """The peer: the same model in plain PyTorch DDP (NCCL, the process group the recipe made), each rank its own
    shard of GPU-resident digits."""
    import torch
    import torch.distributed as dist
    from gpu_throughput import plain_model, steady_rate, train_images
    from torch import nn

    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(device)
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(plain_model(hidden).to(device), device_ids=[device.index])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = train_images()[rank::world].to(device)
    per_epoch = len(images) // micro_batch
    torch.cuda.synchronize()
    dist.barrier()
    t0, step_ends, order = time.perf_counter(), [], None
    for i in range(steps):
        if i % per_epoch == 0:
            order = torch.randperm(len(images), device=device)
        x = images[order[(i % per_epoch) * micro_batch : (i % per_epoch + 1) * micro_batch]]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = nn.functional.mse_loss(model(x).float(), x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i in (0, steps // 2, steps - 1):
            torch.cuda.synchronize()
        step_ends.append(time.perf_counter())
    return {
        "gpus": world, "hidden": hidden, "micro_batch": micro_batch, "steps_per_s": round(steady_rate(step_ends), 1),
        "first_step_s": round(step_ends[0] - t0, 2), "step_ms": step_percentiles(step_ends),
    }  # fmt: skip


def summarize(work: Path) -> dict:
    """{loop h=H: {gpus: {steps_per_s: min/median/max, efficiency, step_ms per rank of the median launch}}}."""
    runs: dict = {}
    for path in sorted(work.glob("results-*-rank*.json")):
        gpus, repeat, rank = re.fullmatch(r"results-(\d+)-.*-r(\d+)-rank(\d+)\.json", path.name).groups()
        for key, figures in json.loads(path.read_text()).items():
            if key.startswith(("recipe", "ddp")):
                launches = runs.setdefault(key, {}).setdefault(int(gpus), {})
                launches.setdefault(repeat, {})[int(rank)] = figures
    table = {}
    for key, by_gpus in runs.items():
        table[key] = {}
        for gpus, launches in sorted(by_gpus.items()):
            rates = sorted(ranks[0]["steps_per_s"] for ranks in launches.values() if 0 in ranks)
            median_launch = min(launches.values(), key=lambda r: abs(r[0]["steps_per_s"] - statistics.median(rates)))
            table[key][gpus] = {
                "launches": len(rates), "micro_batch": median_launch[0]["micro_batch"],
                "steps_per_s": {"min": rates[0], "median": statistics.median(rates), "max": rates[-1]},
                "step_ms_by_rank_of_median_launch": {r: f["step_ms"] for r, f in sorted(median_launch.items())},
            }  # fmt: skip
        one = table[key].get(1)
        for row in table[key].values():
            if one:  # weak scaling: per-GPU micro batch fixed, so samples/s ∝ steps/s × GPUs
                row["efficiency_median"] = round(row["steps_per_s"]["median"] / one["steps_per_s"]["median"], 3)
    return table


def driver(args) -> None:
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu-scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    counts = sorted(args.gpus)
    env = dict(os.environ, NCCL_NVLS_ENABLE="0")  # NVLink multicast off (the device machines' documentation)
    scale = [f"scale:{h}" for h in args.hidden]
    # One process runs several stages on one GPU; with several ranks, Megatron's process groups hang when built a
    # second time in one process (seen on 2 H100s), so there each width is its own torchrun.
    launches = [
        (n, stages, repeat)
        for repeat in range(args.repeats)
        for n in counts
        for stages in ([scale] if n == 1 else [[stage] for stage in scale])
    ]
    if args.reshard:
        launches += [(max(counts), ["reshard"], 0), (1, ["reshard"], 0)] if max(counts) > 1 else []
    for n, launch_stages, repeat in launches:
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={n}", __file__, "--worker",
               "--work", str(work), *sys.argv[1:], "--stages", ",".join(launch_stages),
               "--repeat", str(repeat)]  # fmt: skip
        log = work / f"torchrun-{n}-{'_'.join(launch_stages).replace(':', '')}-r{repeat}.log"
        with open(log, "w") as f:
            try:
                code = subprocess.run(
                    cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=args.launch_timeout_s
                ).returncode
            except subprocess.TimeoutExpired:
                code = 124
        print(f"{n} GPU(s) {launch_stages} #{repeat}: exit {code} in {time.perf_counter() - t0:.0f} s", flush=True)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            shutil.copy(log, args.out)
        if code:  # the other launches still count; the table says how many each row has
            errors = [line for line in log.read_text().splitlines() if "Error" in line or "error" in line]
            print("\n".join(errors[:30]))
    table = summarize(work)
    print(f"\n{args.repeats} launches per count, interleaved; steady steps/s of rank 0; efficiency of the medians")
    print("| model | micro batch / GPU | loop | GPUs | steps/s min / median / max | weak-scaling efficiency "
          "| rank step ms p50 / p90 / p99 (median launch) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for hidden in args.hidden:
        for loop in ("recipe", "ddp"):
            for gpus, row in table.get(f"{loop} h={hidden}", {}).items():
                rate = row["steps_per_s"]
                ranks = "; ".join(f"{f['p50']} / {f['p90']} / {f['p99']}"
                                  for f in row["step_ms_by_rank_of_median_launch"].values())  # fmt: skip
                efficiency = row.get("efficiency_median", "")
                print(f"| hidden {hidden} | {row['micro_batch']} | {loop} | {gpus} | {rate['min']} / "
                      f"**{rate['median']}** / {rate['max']} | {efficiency} | {ranks} |")  # fmt: skip
    reshard = {}
    for path in work.glob("results-1-reshard-*rank0.json"):
        reshard = json.loads(path.read_text()).get("reshard", {})
    if reshard:
        print("\nreshard:", json.dumps(reshard, indent=1))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps({"scaling": table, "reshard": reshard}, indent=1))


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
    p.add_argument("--repeats", type=int, default=3, help="launches per GPU count, interleaved")
    p.add_argument("--reshard", action="store_true", help="also save on the most GPUs and resume on one")
    p.add_argument("--repeat", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None)
    p.add_argument("--stages", type=lambda s: s.split(","), default=[], help=argparse.SUPPRESS)
    p.add_argument("--launch-timeout-s", type=float, default=300)
    p.add_argument("--hang-s", type=float, default=300, help="ranks print their stacks every this many seconds")
    args = p.parse_args()
    args.hidden_micro_batch = args.hidden_micro_batch or [args.micro_batch_size] * len(args.hidden)
    args.reshard_gpus = max(args.gpus)
    sys.path.insert(0, str(HERE))
    worker(args) if args.worker else driver(args)


if __name__ == "__main__":
    main()
