"""Where the megatron engine's time goes on one GPU, by part, in one process: the eager step's host time (its
indices, its batches, zeroing, forward/backward, the optimizer step), the same step under cProfile and torch's
profiler, a graph-mode replay (the loop's way, and bare: the GPU's time per step), a validation and a checkpoint save.

The engine's own functions (``job/megatron_engine.py``) on the pretrain recipe's defaults; nothing is timed through
the loop's logging or progress. Figures are host times per step unless named otherwise: the GPU runs ahead of an
eager step only as far as the host lets it, so the host's time is the step's time where it is the larger.

    bash tests/gpu/run_on_device.sh --run python3 benchmarks/engine_step_parts.py --steps 1000 --json $OUT/parts.json
"""

import argparse
import cProfile
import io
import json
import pstats
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import fiddle as fdl
import torch

from megatron_mnist import defaults
from megatron_mnist.job import megatron_engine as engine
from megatron_mnist.job.process import freeze_heap
from megatron_mnist_recipes.pretrain import pretrain


def timed(fn, repeat: int) -> list[float]:
    """Wall seconds of each of ``repeat`` calls of ``fn``, the device synchronised around each."""
    out = []
    for _ in range(repeat):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return out


def spread(values: list[float], scale: float = 1e6) -> dict:
    return {"min": round(min(values) * scale, 1), "median": round(statistics.median(values) * scale, 1),
            "max": round(max(values) * scale, 1)}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="steps of each timed phase")
    parser.add_argument("--profile", type=int, default=25, help="functions shown by cProfile (0: no cProfile)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    log_dir = tempfile.mkdtemp(prefix="parts-")
    recipe = pretrain(name="parts", log_dir=log_dir, accelerator="gpu", max_steps=20 * args.steps)
    recipe.trainer.loop = "megatron"
    task = fdl.build(recipe)
    kw = task.keywords
    settings, data = kw["trainer"].settings, kw["data"]
    rank, world = engine.init_process_group(settings, kw.get("seed", defaults.SEED))
    engine.seed_everything(kw.get("seed", defaults.SEED))
    stream = torch.cuda.Stream()  # as graph mode builds: everything on the stream the step is captured on
    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "steps": args.steps}
    with torch.cuda.stream(stream):
        parts = engine.build(kw["model"], kw["optim"], settings, rank, world)
        data.build("fit", settings.max_steps, parts.device)
        micro_batches = data.global_batch_size // data.micro_batch_size
        step = engine.Step(parts, micro_batches, data.micro_batch_size, data.files("train"))
        indices = iter(data.megatron_indices("train", 0, 0, 1))

        def next_indices():
            return [next(indices) for _ in range(micro_batches)]

        freeze_heap()  # as the engine's train() does before its loop
        for _ in range(20):
            step.eager(step.batches(next_indices()))
        torch.cuda.synchronize()

        # -- the eager step by part (host time) --
        names = ("indices", "batches", "zero_grad", "forward_backward", "optimizer_step")
        host = {n: 0.0 for n in names}
        t_start = time.perf_counter()
        for _ in range(args.steps):
            t0 = time.perf_counter()
            i = next_indices()
            t1 = time.perf_counter()
            batches = step.batches(i)
            t2 = time.perf_counter()
            parts.model.zero_grad_buffer()
            parts.optimizer.zero_grad()
            t3 = time.perf_counter()
            parts.forward_backward(
                forward_step_func=partial(engine.forward_step, parts.reduction), data_iterator=iter(batches),
                model=parts.model, num_microbatches=micro_batches, seq_length=1,
                micro_batch_size=data.micro_batch_size, forward_only=False,
            )  # fmt: skip
            t4 = time.perf_counter()
            parts.optimizer.step()
            t5 = time.perf_counter()
            for n, a, b in zip(names, (t0, t1, t2, t3, t4), (t1, t2, t3, t4, t5), strict=True):
                host[n] += b - a
        torch.cuda.synchronize()
        wall = time.perf_counter() - t_start
        results["eager_host_us_per_step"] = {n: round(v / args.steps * 1e6, 1) for n, v in host.items()}
        results["eager_steps_per_s"] = round(args.steps / wall, 1)
        print("eager step, host µs per step by part:", results["eager_host_us_per_step"], flush=True)
        print(f"eager: {results['eager_steps_per_s']} steps/s ({wall / args.steps * 1e6:.1f} µs a step)", flush=True)

        # -- a step's GPU time: one step alone, the device idle before and after --
        gpu = []
        for _ in range(50):
            torch.cuda.synchronize()
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            step.eager(step.batches(next_indices()))
            end.record()
            torch.cuda.synchronize()
            gpu.append(begin.elapsed_time(end) / 1e3)
        results["eager_step_span_us"] = spread(gpu)
        print("eager step, first kernel to last (µs):", results["eager_step_span_us"], flush=True)

        # -- torch's profiler: host time by operator, kernel time --
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(100):
                step.eager(step.batches(next_indices()))
            torch.cuda.synchronize()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
        print("---- torch.profiler, 100 eager steps, by self CPU time ----\n" + table, flush=True)
        kernels = sum(e.self_device_time_total for e in prof.key_averages()) / 100
        results["eager_kernel_us_per_step"] = round(kernels, 1)
        results["eager_kernels_per_step"] = round(
            sum(e.count for e in prof.key_averages() if e.self_device_time_total > 0 and e.device_type.name == "CUDA")
            / 100, 1)  # fmt: skip
        print(f"kernel time per step: {kernels:.1f} µs, launches {results['eager_kernels_per_step']}", flush=True)

        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.steps):
                step.eager(step.batches(next_indices()))
            torch.cuda.synchronize()
            profiler.disable()
            for key in ("tottime", "cumulative"):
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(args.profile)
                print(f"---- cProfile, {args.steps} eager steps, by {key} ----\n{out.getvalue()}", flush=True)

        # -- validation and checkpoint (the save with 1 and 2 writer processes, interleaved) --
        results["validation_ms"] = spread(timed(lambda: engine.validate(parts, data, settings), 5), 1e3)
        state = engine.RunState(step=100, consumed_samples=6400, val_loss=0.05)
        run_dir = Path(log_dir) / "parts"
        saves = {1: [], 2: []}
        for _ in range(5):
            for writers in saves:
                engine.CHECKPOINT_WRITERS = writers
                saves[writers] += timed(
                    lambda: engine.save_checkpoint(run_dir, parts, state, 1, True, validated=False), 1
                )
        engine.CHECKPOINT_WRITERS = 1
        for writers, times in saves.items():
            results[f"checkpoint_ms_{writers}_writers"] = spread(times, 1e3)
        print("validation (ms):", results["validation_ms"], "checkpoint save (ms), by writers:",
              {w: results[f"checkpoint_ms_{w}_writers"] for w in saves}, flush=True)  # fmt: skip
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            engine.save_checkpoint(run_dir, parts, state, 1, True, validated=False)
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(args.profile)
            print(f"---- cProfile, one checkpoint save, cumulative ----\n{out.getvalue()}", flush=True)

        # -- graph mode: the loop's replay, then bare replays (the GPU's time per step) --
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        step.capture(next_indices())
        torch.cuda.synchronize()
        results["graph_capture_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
        t0 = time.perf_counter()
        step.replay(next_indices())
        torch.cuda.synchronize()
        results["graph_first_replay_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
        for _ in range(20):
            step.replay(next_indices())
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.steps * 4):
            step.replay(next_indices())
        torch.cuda.synchronize()
        results["graph_replay_steps_per_s"] = round(args.steps * 4 / (time.perf_counter() - t0), 1)
        t0 = time.perf_counter()
        host_indices = 0.0
        for _ in range(args.steps * 4):
            a = time.perf_counter()
            next_indices()
            host_indices += time.perf_counter() - a
        results["graph_indices_us_per_step"] = round(host_indices / (args.steps * 4) * 1e6, 1)
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        begin.record()
        for _ in range(args.steps * 4):
            step.graph.replay()
        end.record()
        torch.cuda.synchronize()
        results["graph_bare_replays_per_s"] = round(args.steps * 4 / (time.perf_counter() - t0), 1)
        results["graph_gpu_us_per_replay"] = round(begin.elapsed_time(end) * 1e3 / (args.steps * 4), 1)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(100):
                step.graph.replay()
            torch.cuda.synchronize()
        results["graph_kernel_us_per_step"] = round(sum(e.self_device_time_total for e in prof.key_averages()) / 100, 1)
        print("---- torch.profiler, 100 bare replays, kernels ----\n"
              + prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25), flush=True)  # fmt: skip
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":  # Megatron's checkpoint save spawns processes that re-import __main__
    main()
