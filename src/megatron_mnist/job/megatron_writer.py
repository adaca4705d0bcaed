"""Megatron's distributed-checkpoint writer, started the cheap way, and (for the megatron engine) run in-process.

The writer hands its results back through a ``multiprocessing`` Manager queue that megatron-core creates at the
first save with the *spawn* start method: a fresh interpreter that re-imports the job's main module, and with it
torch, NeMo and Megatron — 20 s of a GPU job's first checkpoint (measured on an H100, benchmarks/RESULTS.md), and a
second run of a training script that lacks an ``if __name__ == "__main__"`` guard. A *forked* manager, as Megatron's
writer processes themselves are, starts in milliseconds.

megatron-core's save itself forks the training process for every file it writes
(``FileSystemWriterAsync.write_preloaded_data_multiproc``, made to run in an asynchronous save's background process)
and waits for it: for this model's few hundred kilobytes, the fork of a process holding CUDA's mappings and the
wait for its result were ~80 ms of each ~0.1–0.4 s save (cProfile on an H200, benchmarks/RESULTS.md), against
milliseconds for the write. :func:`write_in_this_process` runs the same request with megatron-core's own per-file
writer (``write_preloaded_data``: the same files, the same fsync, the same results) in the training process.
"""

import multiprocessing
import queue
from functools import partial


def use_forked_result_queue() -> None:
    """Create the writer's result queue from a forked manager, unless one exists. Call before CUDA is initialised
    (a forked child must not touch the parent's CUDA context; the manager never does)."""
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if filesystem_async._results_queue is None:
        filesystem_async._results_queue = multiprocessing.get_context("fork").Manager().Queue()


def write_in_this_process(request) -> None:
    """Carry out ``request`` — the ``AsyncRequest`` of ``dist_checkpointing.save(..., async_sharded_save=True)`` with
    the torch_dist strategy — as its ``execute_sync`` does (tensors to host memory, the files written, a barrier,
    the metadata finalised), with its files written here rather than by a forked process per file."""
    if request.async_fn is not None:
        request = request._replace(async_fn=partial(_write_files, *request.async_fn.args))
    request.execute_sync()


def _write_files(transform_list, use_msc, rank, write_buckets, results_queue) -> None:
    """``write_preloaded_data_multiproc``'s contract (each bucket's write results, by index, or the first failure,
    put on ``results_queue`` for the save's finalisation to read), each bucket written by megatron-core's
    ``write_preloaded_data`` in this process."""
    from megatron.core.dist_checkpointing.strategies.filesystem_async import FileSystemWriterAsync

    results: dict | Exception = {}
    for index, bucket in enumerate(write_buckets):
        written, done = queue.SimpleQueue(), queue.Queue()
        done.put(index)  # the writer takes its index off this queue when it is done, as a worker process does
        FileSystemWriterAsync.write_preloaded_data(transform_list, index, bucket, written, done, use_fsync=True,
                                                   use_msc=use_msc)  # fmt: skip
        _, outcome = written.get()
        if isinstance(outcome, Exception):
            results = outcome
            break
        results[index] = outcome
    results_queue.put(results)
