"""Throughput on one GPU: this package's pretrain recipe against plain PyTorch loops, in one process.

The same model (784→64→ReLU→3→64→784, bf16 autocast / bf16-mixed), MSE loss, Adam, micro batch and step count:

  (a)  the package's pretrain recipe, as a user runs it (MegatronStrategy, Megatron's distributed Adam, the data
       module's defaults, validation and checkpoints at the recipe's cadence)
  (a0) the same recipe with the data module's classic per-item DataLoader (``data.device_resident=False``)
  (b)  a plain PyTorch loop with a DataLoader (worker processes, pinned memory)
  (c)  a plain loop over GPU-resident data, eager
  (d)  the plain GPU-resident loop with the whole step (forward, backward, fused capturable Adam) in a CUDA graph:
       the practical limit for this model

Prints samples/s (steady: the second half of the steps, intervals that contain a validation left out), the ratios
a/b and a/c, the time from ``fit()`` (or the loop's start) to the end of the first step, and peak GPU memory.
``--profile N`` runs (a) under cProfile (its figures are then not throughput figures) and prints the top N functions
by own and by cumulative time: with ``--variants a`` in a fresh process, that includes the cold start.

    python benchmarks/gpu_throughput.py --steps 2000 --micro-batch-size 64 --json gpu_throughput.json
"""

import argparse
import cProfile
import io
import json
import pstats
import tempfile
import time
from pathlib import Path

import fiddle as fdl
import torch
from gpu_pipeline import StepTimer as PipelineStepTimer
from gpu_pipeline import reset_megatron_state  # the script beside this one (its folder is on sys.path)
from torch import nn

from megatron_mnist.data.dataset import MNISTCustom
from recipes.pretrain import pretrain

VARIANTS = ("a", "a0", "b", "c", "d")


class StepTimer(PipelineStepTimer):
    """gpu_pipeline's timer, but the device is synchronised only at the first, middle and last step: a sync per
    step would stop the host from running ahead of the GPU, which the plain loops are not stopped from."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self.step_ends or len(self.step_ends) in (self.steps // 2, self.steps - 1):
            torch.cuda.synchronize()
        self.step_ends.append(time.perf_counter())


def steady_rate(step_ends: list[float], excluded: set[int] = frozenset()) -> float:
    """Steps per second over the second half of the steps, leaving out intervals that hold something else."""
    half = len(step_ends) // 2
    intervals = [(i, step_ends[i] - step_ends[i - 1]) for i in range(half + 1, len(step_ends)) if i not in excluded]
    return len(intervals) / sum(t for _, t in intervals)


def recipe_variant(args, device_resident: bool, log_dir: str, profile: int = 0) -> dict:
    steps = args.steps
    recipe = pretrain(
        name=f"bench-{'resident' if device_resident else 'loader'}",
        log_dir=log_dir,
        accelerator="gpu",
        max_steps=steps,
        micro_batch_size=args.micro_batch_size,
    )
    recipe.data.device_resident = device_resident
    if not device_resident:
        recipe.data.num_workers = args.recipe_workers
    task = fdl.build(recipe)
    timer = StepTimer(steps)
    task.keywords["trainer"].callbacks.append(timer)
    torch.cuda.reset_peak_memory_stats()
    profiler = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    if profiler:
        profiler.enable()
    task()
    if profiler:
        profiler.disable()
    wall = time.perf_counter() - t0
    figures = {
        "steps": len(timer.step_ends),
        "steps_per_s": steady_rate(timer.step_ends, timer.after_validation),
        "first_step_s": timer.step_ends[0] - timer.fit_start,
        "wall_s": wall,
        "samples_per_s_overall": len(timer.step_ends) * args.micro_batch_size / (timer.step_ends[-1] - timer.fit_start),
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20,
    }
    reset_megatron_state()
    if profiler:
        for key in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(profile)
            print(f"---- cProfile of (a), {steps} steps, by {key} ----\n{out.getvalue()}", flush=True)
        if args.json:
            profiler.dump_stats(Path(args.json).with_suffix(".prof"))
    return figures


# -- plain PyTorch ---------------------------------------------------------------------------------------------------
def plain_model(hidden: int = 64) -> nn.Module:
    trunk = nn.Sequential(nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 3))
    decoder = nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, 784))
    return nn.Sequential(trunk, decoder).cuda()


class Images(torch.utils.data.Dataset):
    """Per-item access, as a DataLoader user writes it."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def train_images() -> torch.Tensor:
    return MNISTCustom(train=True).data.reshape(-1, 784)  # the embedded sample's 8,000 training digits, [0, 1]


def run_loop(steps: int, batches, step_fn) -> dict:
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    step_ends = []
    for i in range(steps):
        step_fn(next(batches))
        if i in (0, steps // 2, steps - 1):
            torch.cuda.synchronize()
        step_ends.append(time.perf_counter())
    return {
        "steps": steps,
        "steps_per_s": steady_rate(step_ends),
        "first_step_s": step_ends[0] - t0,
        "wall_s": step_ends[-1] - t0,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20,
    }


def eager_step(model, optimizer):
    def step(x):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = nn.functional.mse_loss(model(x).float(), x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def endless(loader):
    while True:
        yield from loader


def plain_dataloader(args) -> dict:
    torch.manual_seed(0)
    model = plain_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(
        Images(train_images()),
        batch_size=args.micro_batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        pin_memory=True,
        persistent_workers=args.workers > 0,
    )
    step = eager_step(model, optimizer)
    batches = (x.cuda(non_blocking=True) for x in endless(loader))
    return run_loop(args.steps, batches, step)


def resident_batches(images: torch.Tensor, batch: int):
    """Batches gathered on the GPU from a fresh permutation per epoch."""
    per_epoch = len(images) // batch
    while True:
        order = torch.randperm(len(images), device=images.device)
        for i in range(per_epoch):
            yield images[order[i * batch : (i + 1) * batch]]


def plain_resident(args) -> dict:
    torch.manual_seed(0)
    model = plain_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    return run_loop(
        args.steps, resident_batches(train_images().cuda(), args.micro_batch_size), eager_step(model, optimizer)
    )


def plain_cuda_graph(args) -> dict:
    """The whole step captured once and replayed; per step only the batch's indices are copied in."""
    torch.manual_seed(0)
    model = plain_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True, capturable=True)
    images = train_images().cuda()
    static_index = torch.zeros(args.micro_batch_size, dtype=torch.long, device="cuda")

    def step_body():
        for p in model.parameters():  # zeroing inside the graph: grads keep their (captured) memory
            if p.grad is not None:
                p.grad.zero_()
        x = images[static_index]
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            loss = nn.functional.mse_loss(model(x).float(), x)
        loss.backward()
        optimizer.step()

    side = torch.cuda.Stream()  # warm up on a side stream, as CUDA graph capture requires
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step_body()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step_body()

    def step(index):
        static_index.copy_(index)
        graph.replay()

    def index_batches():
        per_epoch = len(images) // args.micro_batch_size
        while True:
            order = torch.randperm(len(images), device="cuda")
            for i in range(per_epoch):
                yield order[i * args.micro_batch_size : (i + 1) * args.micro_batch_size]

    return run_loop(args.steps, index_batches(), step)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--micro-batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers of (b)")
    parser.add_argument("--recipe-workers", type=int, default=0, help="DataLoader workers of (a0); 0 = the default")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="run (a) under cProfile; print the top N functions"
    )
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()
    variants = args.variants.split(",")
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"--variants: unknown {', '.join(sorted(unknown))} (expected some of {', '.join(VARIANTS)})")
    results = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "steps": args.steps,
        "micro_batch_size": args.micro_batch_size,
    }
    log_dir = tempfile.mkdtemp(prefix="bench-")
    runners = {
        "a": lambda: recipe_variant(args, True, log_dir, args.profile),
        "a0": lambda: recipe_variant(args, False, log_dir),
        "b": lambda: plain_dataloader(args),
        "c": lambda: plain_resident(args),
        "d": lambda: plain_cuda_graph(args),
    }
    if args.profile:
        results["profiled"] = "(a) ran under cProfile: its figures are not throughput figures"
    for name in variants:
        figures = runners[name]()
        figures["samples_per_s"] = figures["steps_per_s"] * args.micro_batch_size
        results[name] = {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}
        print(name, results[name], flush=True)
    for num, den in (("a", "b"), ("a", "c"), ("a0", "b"), ("a", "d")):
        if num in results and den in results:
            results[f"{num}/{den}"] = round(results[num]["steps_per_s"] / results[den]["steps_per_s"], 3)
    print(json.dumps(results, indent=2))
    print("\n| path | samples/s | steps/s | first step | peak GPU memory |\n|---|---|---|---|---|")
    for name in variants:
        r = results[name]
        print(
            f"| ({name}) | {r['samples_per_s']:,.0f} | {r['steps_per_s']:,.1f} | {r['first_step_s']:.2f} s | "
            f"{r['peak_gpu_mib']:.0f} MiB |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":  # required: Megatron's checkpoint save spawns processes that re-import __main__
    main()
