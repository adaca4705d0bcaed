"""Megatron's distributed-checkpoint writer, started the cheap way.

The writer hands its results back through a ``multiprocessing`` Manager queue that megatron-core creates at the
first save with the *spawn* start method: a fresh interpreter that re-imports the job's main module, and with it
torch, NeMo and Megatron — 20 s of a GPU job's first checkpoint (measured on an H100, benchmarks/RESULTS.md), and a
second run of a training script that lacks an ``if __name__ == "__main__"`` guard. A *forked* manager, as Megatron's
writer processes themselves are, starts in milliseconds.
"""

import multiprocessing


def use_forked_result_queue() -> None:
    """Create the writer's result queue from a forked manager, unless one exists. Call before CUDA is initialised
    (a forked child must not touch the parent's CUDA context; the manager never does)."""
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if filesystem_async._results_queue is None:
        filesystem_async._results_queue = multiprocessing.get_context("fork").Manager().Queue()
