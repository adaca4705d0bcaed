"""Throughput on one GPU: this package's pretrain recipe against plain PyTorch loops, in one process.

The same model (784→64→ReLU→3→64→784, bf16 autocast / bf16-mixed), MSE loss, Adam, micro batch and step count:

  (a)  the package's pretrain recipe, as a user runs it (MegatronStrategy, Megatron's distributed Adam, the data
       module's defaults, validation and checkpoints at the recipe's cadence)
  (a_prev) the recipe with what NeMo/Megatron do per step that (a) turns off put back: NeMo's progress printer in
       place of the progress bar, Megatron DDP's NaN check, the unused grad norm (the performance issue's before)
  (a0) the recipe with the data module's classic per-item DataLoader (``data.device_resident=False``)
  (m)  the recipe under the megatron engine (``trainer.loop=megatron``: our loop over megatron-core), eager
  (g)  the same in graph mode (``trainer.cuda_graph=true``: the whole step in one CUDA graph)
  (g_copy) graph mode with its batches gathered outside the graph (an index tensor from a list, three gathers) and
       copied into the captured step's static buffers, as before the graph gathered them itself (the index lookups,
       one per item then, stay vectorised here)
  (m_prev), (g_prev) the megatron engine as it was before its step was cut down (torch's multi-tensor capturable
       Adam, and megatron-core's reduce-scatter and all-gather on one rank); (m_foreach), (m_collectives): only one
       of the two put back, for the cost of each; (m_before) the engine before its gradients were fp32 under bf16 and
       before a same-step last checkpoint was linked to the best instead of saved again (2026-12-06)
  (b)  a plain PyTorch loop with a DataLoader (worker processes, pinned memory)
  (c)  a plain loop over GPU-resident data, eager
  (d)  the plain GPU-resident loop with the whole step (forward, backward, fused capturable Adam) in a CUDA graph:
       the practical limit for this model

``--rounds R`` runs every variant R times, interleaved (a, a_prev, b, ..., a, a_prev, b, ...): runs vary by up to
2× on one host, so one run per variant cannot tell a change from noise. Prints min / median / max steps/s (steady:
the second half of the steps, intervals holding a validation left out), ratios of the medians, the time from
``fit()`` to the end of the first step, and peak GPU memory.

Where the host time of a recipe step goes: ``--profile N`` runs (a) and (a_prev) under cProfile (not throughput
figures then) and prints the top N functions by own time; ``--count-syncs`` runs them in torch's sync-debug mode
and counts the operations that block the host until the GPU is done, by the line that called them.

    python benchmarks/gpu_throughput.py --steps 1500 --rounds 3 --profile 25 --count-syncs --json out.json
"""

import argparse
import collections
import contextlib
import cProfile
import io
import json
import pstats
import statistics
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path

import fiddle as fdl
import torch
from gpu_pipeline import StepTimer as PipelineStepTimer
from gpu_pipeline import reset_megatron_state  # the script beside this one (its folder is on sys.path)
from torch import nn

from megatron_mnist.data.dataset import MNISTCustom
from megatron_mnist_recipes.pretrain import pretrain

VARIANTS = (
    "a",
    "a_prev",
    "a0",
    "m",
    "m_before",
    "m_prev",
    "m_foreach",
    "m_collectives",
    "g",
    "g_prev",
    "g_copy",
    "b",
    "c",
    "d",
)


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


def previous_step_settings(task) -> None:
    """(a_prev): put back what NeMo/Megatron do per step and the recipe turns off (see builders.trainer)."""
    from megatron.core.distributed import DistributedDataParallelConfig

    from megatron_mnist.job.megatron_optim import MegatronAdamModule

    strategy = task.keywords["trainer"].strategy
    strategy.replace_progress_bar = True  # NeMo's ProgressPrinter, every step
    strategy.ddp_config = DistributedDataParallelConfig(check_for_nan_in_grad=True)  # NeMo's ddp="megatron"
    MegatronAdamModule.skip_unused_grad_norm = False


def multi_tensor_capturable_adam(optimizer) -> None:
    """(m_prev, m_foreach): the engine's Adam before it was fused (capturable, torch's multi-tensor kernels)."""
    for group in optimizer.param_groups:
        group.update(capturable=True, fused=False, foreach=None)


def copying_step():
    """(g_copy): the engine's Step as it replayed before its graph gathered the batches: each micro-batch gathered
    outside the graph, from the sampler's indices one by one, and copied into static buffers."""
    from megatron_mnist.job import megatron_engine

    class CopyingStep(megatron_engine.Step):
        def capture(self, indices):
            self.static = [{k: v.clone() for k, v in b.items()} for b in self.per_item_batches(indices)]
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, stream=torch.cuda.current_stream(), capture_error_mode="thread_local"):
                self.loss_out = self.loss(self.eager(self.static))

        def per_item_batches(self, indices):  # as MNISTCustom.__getitems__ took a list of ints
            return [self.files.gather(i.tolist()) for i in indices]

        def replay(self, indices):
            for static, batch in zip(self.static, self.per_item_batches(indices), strict=True):
                for key, value in batch.items():
                    static[key].copy_(value, non_blocking=True)
            self.graph.replay()
            return self.loss_out

    return CopyingStep


def saving_twice(save_checkpoint):
    """(m_before): the engine's ``save_checkpoint`` as before 2026-12-06: the last written by a save of its own
    beside a best of the same step, where today's links the best's files (``_twin``)."""
    from megatron_mnist.job import megatron_engine as engine

    def save(run_dir, parts, state, top_k, zero, validated=True):
        engine._twin = lambda folder, source, name, zero: engine._write(folder, name, parts, state, zero, state.best)
        save_checkpoint(run_dir, parts, state, top_k, zero, validated)

    return save


@contextlib.contextmanager
def put_back(name: str):
    """What the (m_prev) family puts back into the megatron engine for one run (its step functions swapped)."""
    from megatron_mnist.job import megatron_engine

    saved = (megatron_engine.use_fused_capturable_adam, megatron_engine.skip_one_rank_collectives,
             megatron_engine.Step, megatron_engine.grads_in_fp32, megatron_engine.save_checkpoint,
             megatron_engine._twin)  # fmt: skip
    if name == "m_before":
        megatron_engine.grads_in_fp32 = lambda precision: False
        megatron_engine.save_checkpoint = saving_twice(megatron_engine.save_checkpoint)
    if name == "g_copy":
        megatron_engine.Step = copying_step()
    if name in ("m_prev", "g_prev", "m_foreach"):
        megatron_engine.use_fused_capturable_adam = multi_tensor_capturable_adam
    if name in ("m_prev", "g_prev", "m_collectives"):
        megatron_engine.skip_one_rank_collectives = lambda model, config: None
    try:
        yield
    finally:
        (megatron_engine.use_fused_capturable_adam, megatron_engine.skip_one_rank_collectives, megatron_engine.Step,
         megatron_engine.grads_in_fp32, megatron_engine.save_checkpoint, megatron_engine._twin) = saved  # fmt: skip


class EngineStepTimer:
    """The megatron engine's ``on_step_end`` hook, timing as :class:`StepTimer` does (the device synchronised only
    at the first, middle and last step; the intervals holding a validation and its checkpoint marked)."""

    def __init__(self, steps: int):
        self.steps, self.fit_start = steps, time.perf_counter()
        self.step_ends: list[float] = []
        self.after_validation: set[int] = set()

    def __call__(self, step: int, validated: bool) -> None:
        if not self.step_ends or len(self.step_ends) in (self.steps // 2, self.steps - 1):
            torch.cuda.synchronize()
        self.step_ends.append(time.perf_counter())
        if validated:
            self.after_validation.add(len(self.step_ends) - 1)


def recipe_variant(args, name: str, log_dir: str, run: str, profile: int = 0, count_syncs: bool = False) -> dict:
    steps = args.steps if not (profile or count_syncs) else args.diagnose_steps
    recipe = pretrain(name=f"bench-{name}-{run}", log_dir=log_dir, accelerator="gpu", max_steps=steps,
                      micro_batch_size=args.micro_batch_size)  # fmt: skip
    recipe.model.hidden_size = args.hidden_size
    recipe.data.device_resident = name != "a0"
    recipe.trainer.enable_progress_bar = True  # as a user runs it (replaced by NeMo's printer in a_prev)
    if name == "a0":
        recipe.data.num_workers = args.recipe_workers
    engine = name[0] in "mg"  # m, g and their _prev / put-back variants
    if engine:
        recipe.trainer.loop = "megatron"
        recipe.trainer.cuda_graph = name[0] == "g"
    task = fdl.build(recipe)
    if name == "a_prev":
        previous_step_settings(task)
    if engine:
        timer = task.keywords["trainer"].on_step_end = EngineStepTimer(steps)
    else:
        timer = StepTimer(steps)
        task.keywords["trainer"].callbacks.append(timer)
    torch.cuda.reset_peak_memory_stats()
    profiler = cProfile.Profile() if profile else None
    syncs = collections.Counter()
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            if count_syncs:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
            if profiler:
                profiler.enable()
            with put_back(name):
                task()
    finally:
        if profiler:
            profiler.disable()
        torch.cuda.set_sync_debug_mode("default")
        from megatron_mnist.job.megatron_optim import MegatronAdamModule

        MegatronAdamModule.skip_unused_grad_norm = True
    wall = time.perf_counter() - t0
    for w in caught:
        if "synchronizing CUDA operation" in str(w.message):
            syncs[f"{Path(w.filename).parent.name}/{Path(w.filename).name}:{w.lineno}"] += 1
    figures = {
        "steps": len(timer.step_ends),
        "steps_per_s": steady_rate(timer.step_ends, timer.after_validation),
        "first_step_s": timer.step_ends[0] - timer.fit_start,
        "wall_s": wall,
        "samples_per_s_overall": len(timer.step_ends) * args.micro_batch_size / (timer.step_ends[-1] - timer.fit_start),
        # every step, validations and checkpoints at the recipe's cadence included (from the end of the first)
        "steps_per_s_with_validation": (len(timer.step_ends) - 1) / (timer.step_ends[-1] - timer.step_ends[0]),
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20,
    }
    reset_megatron_state()
    if count_syncs:
        figures["syncs_per_step"] = round(sum(syncs.values()) / steps, 2)
        print(f"---- ({name}): {sum(syncs.values())} synchronizing operations in {steps} steps, by caller ----")
        for where, n in syncs.most_common(15):
            print(f"{n:8d}  {where}")
    if profiler:
        for key in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(profile)
            print(f"---- cProfile of ({name}), {steps} steps, by {key} ----\n{out.getvalue()}", flush=True)
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
    model = plain_model(args.hidden_size)
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
    model = plain_model(args.hidden_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    return run_loop(
        args.steps, resident_batches(train_images().cuda(), args.micro_batch_size), eager_step(model, optimizer)
    )


def plain_cuda_graph(args) -> dict:
    """The whole step captured once and replayed; per step only the batch's indices are copied in."""
    torch.manual_seed(0)
    model = plain_model(args.hidden_size)
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
    parser.add_argument("--hidden-size", type=int, default=64, help="the model's hidden width (recipe and plain)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant, interleaved")
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers of (b)")
    parser.add_argument("--recipe-workers", type=int, default=0, help="DataLoader workers of (a0); 0 = the default")
    parser.add_argument("--variants", default="a,a_prev,b,c,d", help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="also profile (a), (a_prev), (m), (m_prev): the top N"
    )
    parser.add_argument("--count-syncs", action="store_true", help="also count (a)'s and (a_prev)'s host syncs")
    parser.add_argument("--diagnose-steps", type=int, default=300, help="steps of the profiled / counted runs")
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
        "hidden_size": args.hidden_size,
        "rounds": args.rounds,
        "runs": {name: [] for name in variants},
    }
    log_dir = tempfile.mkdtemp(prefix="bench-")
    runners = {
        "a": lambda run: recipe_variant(args, "a", log_dir, run),
        "a_prev": lambda run: recipe_variant(args, "a_prev", log_dir, run),
        "a0": lambda run: recipe_variant(args, "a0", log_dir, run),
        **{n: partial(recipe_variant, args, n, log_dir) for n in VARIANTS if n[0] in "mg"},
        "b": lambda run: plain_dataloader(args),
        "c": lambda run: plain_resident(args),
        "d": lambda run: plain_cuda_graph(args),
    }
    for round_ in range(args.rounds):
        for name in variants:
            figures = runners[name](str(round_))
            figures = {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}
            results["runs"][name].append(figures)
            print(f"round {round_} ({name})", figures, flush=True)
    medians = {}
    for name in variants:
        rates = [r["steps_per_s"] for r in results["runs"][name]]
        medians[name] = statistics.median(rates)
        results[name] = {
            "steps_per_s": {"min": min(rates), "median": medians[name], "max": max(rates)},
            "first_step_s_median": statistics.median(r["first_step_s"] for r in results["runs"][name]),
            "steps_per_s_with_validation_median": statistics.median(
                r.get("steps_per_s_with_validation", 0.0) for r in results["runs"][name]
            ),
            "peak_gpu_mib": max(r["peak_gpu_mib"] for r in results["runs"][name]),
        }
    pairs = (("a", "b"), ("a_prev", "b"), ("a", "a_prev"), ("a", "c"), ("a0", "b"), ("a", "d"), ("m", "b"),
             ("m", "a"), ("g", "b"), ("g", "d"), ("g", "m"), ("m", "m_prev"), ("g", "g_prev"), ("m_prev", "b"),
             ("g_prev", "b"), ("m", "m_before"), ("m_before", "b"))  # fmt: skip
    for num, den in pairs:
        if num in medians and den in medians:
            results[f"{num}/{den}"] = round(medians[num] / medians[den], 3)
    recipe_variants = [n for n in ("a", "a_prev", "m", "m_prev") if n in variants]
    if args.count_syncs:
        results["syncs_per_step"] = {
            n: recipe_variant(args, n, log_dir, "syncs", count_syncs=True)["syncs_per_step"] for n in recipe_variants
        }
    if args.profile:
        for name in recipe_variants:
            recipe_variant(args, name, log_dir, "profile", profile=args.profile)
    print(json.dumps(results, indent=2))
    print(f"\n{args.rounds} interleaved runs each, {args.steps} steps, micro batch {args.micro_batch_size}, "
          f"{results['device']}")  # fmt: skip
    print(
        "| path | steps/s min / median / max | with validation + checkpoints (median) | samples/s (median) "
        "| first step (median) | peak GPU memory |"
    )
    print("|---|---|---|---|---|---|")
    for name in variants:
        r = results[name]
        rate = r["steps_per_s"]
        print(
            f"| ({name}) | {rate['min']:,.1f} / **{rate['median']:,.1f}** / {rate['max']:,.1f} | "
            f"{f'{cadence:,.1f}' if (cadence := r['steps_per_s_with_validation_median']) else ''} | "
            f"{rate['median'] * args.micro_batch_size:,.0f} | {r['first_step_s_median']:.2f} s | "
            f"{r['peak_gpu_mib']:.0f} MiB |"
        )
    print("ratios of medians:", {k: v for k, v in results.items() if "/" in k})
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":  # required: Megatron's checkpoint save spawns processes that re-import __main__
    main()
