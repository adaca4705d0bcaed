"""How far the Megatron path goes in a CUDA graph on one GPU: the recipe's model, Megatron DDP and distributed Adam
driven by a plain loop (no Lightning, no NeMo), eager and captured (the performance issue, goal 2).

The recipe's pieces, built as NeMo builds them for the pretrain task: ``PretrainConfig`` (bf16 parameters),
megatron-core's ``DistributedDataParallel`` (``check_for_nan_in_grad=False``, as ``builders.trainer``), its
``get_megatron_optimizer`` with the recipe's ``OptimizerConfig`` (distributed Adam, bf16 params, fp32 main weights,
no clipping) and the recipe's ``MSELossReduction``. One step = zero the grad buffer, forward, loss, backward,
``finalize_model_grads`` (the reduce-scatter), ``optimizer.step()`` (main-grad copy, Adam, copy back, all-gather).
The images live on the GPU; each step's batch is gathered by indices (a fixed-size copy in, nothing out).

  (m)    eager, that step in a Python loop
  (m_fb) forward + loss + backward captured in a CUDA graph; finalize and optimizer step eager
  (m_g)  the whole step captured (Adam made ``capturable``: its step counters on the GPU)

Each variant runs from the same seed and the same batch order; the per-step losses of (m_fb) and (m_g) are
compared with (m)'s (max relative difference over the steps). Steps/s: the second half of the steps, min / median /
max over ``--rounds`` interleaved runs. A variant that fails prints its error and the rest go on.

    python benchmarks/megatron_graph_probe.py --steps 2000 --rounds 3 --json out.json
"""

import argparse
import faulthandler
import json
import os
import statistics
import sys
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_throughput import run_loop, train_images  # noqa: E402  the script beside this one

VARIANTS = ("m", "m_fb", "m_g")


def init_one_rank():
    from megatron.core import parallel_state, tensor_parallel

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    torch.cuda.set_device(0)
    torch.distributed.init_process_group("nccl", world_size=1, rank=0)
    parallel_state.initialize_model_parallel()
    tensor_parallel.model_parallel_cuda_manual_seed(1234)


def build(seed: int, lr: float):
    """The recipe's model, DDP wrapper, distributed Adam and loss, from ``seed``."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    from megatron_mnist.model.config import PretrainConfig

    torch.manual_seed(seed)
    config = PretrainConfig(bf16=True, params_dtype=torch.bfloat16, pipeline_dtype=torch.bfloat16)
    module = config.configure_model().cuda().bfloat16()  # what NeMo's bf16 plugin makes of it (inputs cast below)
    ddp_config = DistributedDataParallelConfig(check_for_nan_in_grad=False, use_distributed_optimizer=True)
    model = DistributedDataParallel(config, ddp_config, module)
    optimizer = get_megatron_optimizer(
        OptimizerConfig(optimizer="adam", lr=lr, bf16=True, use_distributed_optimizer=True, clip_grad=0.0), [model]
    )
    loss_fn = config.get_loss_reduction_class()()
    # as the recipe's MegatronAdamModule: no gradient norm without clipping (megatron-core's ChainedOptimizer
    # computes one every step, with host-side tensors: it cannot be captured, and nothing would use it)
    optimizer.get_grad_norm = lambda: None
    return model, optimizer, loss_fn


def step_fn(model, optimizer, loss_fn, images, index):
    """One training step on ``images[index]``; returns the loss (a GPU tensor, not read)."""
    from megatron.core.distributed import finalize_model_grads

    def forward_backward():
        model.zero_grad_buffer()
        x = images.index_select(0, index)
        loss, _ = loss_fn.forward({"data": x}, model(x.to(torch.bfloat16)))
        loss.backward()
        return loss

    def update():
        finalize_model_grads([model])
        optimizer.step()

    return forward_backward, update


def capture(fn, warm_up, error_mode: str):
    """Run ``warm_up()`` on a side stream, then capture ``fn`` in a CUDA graph on that stream (not run: its first
    replay runs it); returns (graph, output). Warming up on the capture's own stream is torch's rule for autograd."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    try:
        with torch.cuda.stream(side):
            warm_up()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side, capture_error_mode=error_mode):
            out = fn()
        return graph, out
    finally:
        torch.cuda.current_stream().wait_stream(side)


def repeat(fn, times: int):
    return lambda: [fn() for _ in range(times)]


def first_capture_of_the_process(args, images) -> str | None:
    """Seen on H100 and H200 (torch 2.11, megatron-core 0.15.3): the first capture of this step in a process fails
    in the backward pass ("operation would make the legacy stream depend on a capturing blocking stream") whatever
    the warm-up stream and ``capture_error_mode`` (8 processes of 8), and capturing the same model again on the same
    stream fails too; a freshly built model captured after that works (13 captures in 5 processes). Megatron DDP's
    gradient hooks are the likely party (state set up on the first backward under capture). So the probe spends
    that first capture on a throwaway model. Returns its error, or None if it worked.
    """
    model, optimizer, loss_fn = build(args.seed, args.lr)
    index = torch.zeros(args.micro_batch_size, dtype=torch.long, device="cuda")
    forward_backward, _ = step_fn(model, optimizer, loss_fn, images, index)
    try:
        capture(forward_backward, repeat(forward_backward, 3), args.capture_error_mode)
    except torch.AcceleratorError as e:
        return str(e.__context__ or e).splitlines()[0]
    return None


def run_variant(name: str, args, images: torch.Tensor, orders: torch.Tensor) -> dict:
    """``orders``: [steps, micro batch] indices, the same for every variant."""
    model, optimizer, loss_fn = build(args.seed, args.lr)
    index = torch.zeros(args.micro_batch_size, dtype=torch.long, device="cuda")
    forward_backward, update = step_fn(model, optimizer, loss_fn, images, index)
    losses = torch.zeros(args.steps, device="cuda")
    warmup = 0
    if name == "m":

        def step(i):
            index.copy_(orders[i])
            losses[i] = forward_backward().detach()
            update()

    elif name == "m_fb":
        index.copy_(orders[0])
        # warm-up: gradients only, no update, so the weights stay (m)'s
        graph, loss_out = capture(forward_backward, repeat(forward_backward, 3), args.capture_error_mode)

        def step(i):
            index.copy_(orders[i])
            graph.replay()
            losses[i] = loss_out.detach()
            update()

    else:  # m_g
        for group in optimizer.optimizer.param_groups:
            group["capturable"] = True  # torch Adam: step counters on the GPU, no host read in the update

        def whole():
            loss = forward_backward()
            update()
            return loss.detach()

        # the warm-up updates the weights: run it on the first steps' batches, counted as those steps
        warmup = 3

        def warm_up():
            for i in range(warmup):
                index.copy_(orders[i])
                losses[i] = whole()
            index.copy_(orders[warmup])

        graph, loss_out = capture(whole, warm_up, args.capture_error_mode)  # its first replay is step `warmup`

        def step(i):
            index.copy_(orders[i])
            graph.replay()
            losses[i] = loss_out

    figures = run_loop(args.steps - warmup, iter(range(warmup, args.steps)), step)
    return {**figures, "losses": losses.cpu().tolist()}


def max_rel_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b, strict=True))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--micro-batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--capture-error-mode",
        default="thread_local",
        choices=("global", "thread_local", "relaxed"),
        help="torch.cuda.graph's: with 'global', a CUDA call of another thread during the capture (NCCL's watchdog "
        "polls its events) can invalidate it",
    )
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="then profile (m): the top N functions")
    args = parser.parse_args()
    faulthandler.dump_traceback_later(540, exit=True)  # a hang leaves its stacks, within the device's call limit
    init_one_rank()
    images = train_images().cuda()
    print(f"{len(images)} training digits, pixel mean {images.mean().item():.4f}", flush=True)
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    orders = torch.stack([torch.randperm(len(images), generator=generator)[: args.micro_batch_size]
                          for _ in range(args.steps)]).cuda()  # fmt: skip
    variants = args.variants.split(",")
    primed = first_capture_of_the_process(args, images) if {"m_fb", "m_g"} & set(variants) else None
    print(f"the first capture of the process (a throwaway model): {primed or 'worked'}", flush=True)
    runs = {name: [] for name in variants}
    errors = {}
    for round_ in range(args.rounds):
        for name in variants:
            if name in errors:
                continue
            try:
                figures = run_variant(name, args, images, orders)
            except Exception as e:  # noqa: BLE001  report what stands in the way and go on with the others
                while e.__context__ is not None:  # the first error: a failed capture raises again at its end
                    e = e.__context__
                errors[name] = "".join(traceback.format_exception(e)[-8:])
                print(f"({name}) failed, first error:\n{errors[name]}", flush=True)
                continue
            runs[name].append(figures)
            at = [0, 1, 10, 100, args.steps // 2, args.steps - 1]
            print(f"round {round_} ({name}): {figures['steps_per_s']:,.1f} steps/s, first step "
                  f"{figures['first_step_s'] * 1e3:.1f} ms, loss at steps {at}: "
                  f"{[round(figures['losses'][i], 5) for i in at]}", flush=True)  # fmt: skip
    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "steps": args.steps,
               "micro_batch_size": args.micro_batch_size, "errors": errors}  # fmt: skip
    results["first_capture_of_the_process"] = primed or "worked"
    reference = runs.get("m", [{}])[0].get("losses")
    print(f"\n{args.rounds} interleaved runs, {args.steps} steps, micro batch {args.micro_batch_size}, "
          f"{results['device']}")  # fmt: skip
    print("| variant | steps/s min / median / max | first step | loss vs (m): max rel diff |")
    print("|---|---|---|---|")
    for name in variants:
        if not runs[name]:
            print(f"| ({name}) | failed: {errors.get(name, '')[:200]} | | |")
            continue
        rates = sorted(r["steps_per_s"] for r in runs[name])
        first = statistics.median(r["first_step_s"] for r in runs[name])
        diff = "—"
        if reference and name != "m":
            diff = f"{max_rel_diff(runs[name][0]['losses'], reference):.2e}"
        results[name] = {"steps_per_s": {"min": rates[0], "median": statistics.median(rates), "max": rates[-1]},
                         "first_step_s_median": first, "loss_max_rel_diff_vs_m": diff}  # fmt: skip
        print(f"| ({name}) | {rates[0]:,.1f} / **{statistics.median(rates):,.1f}** / {rates[-1]:,.1f} | "
              f"{first * 1e3:.1f} ms | {diff} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if args.profile:  # where the host time of the eager Megatron step goes (cProfile: not a throughput figure)
        import cProfile
        import io
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        run_variant("m", args, images, orders)
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.profile)
        print(f"---- cProfile of (m), {args.steps} steps, by own time ----\n{out.getvalue()}")
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(args.profile)
        print(f"---- cProfile of (m), {args.steps} steps, by cumulative time ----\n{out.getvalue()}")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
