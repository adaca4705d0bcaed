"""Megatron's distributed-checkpoint writer, started the cheap way, and (for the megatron engine) behind the step.

The writer hands its results back through a ``multiprocessing`` Manager queue that megatron-core creates at the
first save with the *spawn* start method: a fresh interpreter that re-imports the job's main module, and with it
torch, NeMo and Megatron — 20 s of a GPU job's first checkpoint (measured on an H100, benchmarks/RESULTS.md), and a
second run of a training script that lacks an ``if __name__ == "__main__"`` guard. A *forked* manager, as Megatron's
writer processes themselves are, starts in milliseconds.

The megatron engine also saves asynchronously, as Megatron-LM's ``--async-save`` does: megatron-core's own
``AsyncRequest`` (its save plan, its D2H copy, its file writer, its finalisation) scheduled through its
``AsyncCallsQueue``, with a caller of ours (:class:`ForkedWriter`). Megatron's two callers both cost the training
process on every save: its temporal one forks the training process (~30 ms with CUDA's mappings, then the write
itself forks again), its persistent one spawns a fresh interpreter at the first save and blocks until that has
imported torch and Megatron. Ours is forked once, before CUDA starts, and kept: per save the training process copies
the state to host memory (the state as of that step, whatever the step after does) and sends it over a pipe; the
writer writes while training goes on; the next save (or the end of training) finalises it.
"""

import multiprocessing
import pickle
import signal

from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCaller, AsyncCallsQueue


def use_forked_result_queue() -> None:
    """Create the writer's result queue from a forked manager, unless one exists. Call before CUDA is initialised
    (a forked child must not touch the parent's CUDA context; the manager never does)."""
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if filesystem_async._results_queue is None:
        filesystem_async._results_queue = multiprocessing.get_context("fork").Manager().Queue()


class ForkedWriter(AsyncCaller):
    """megatron-core's ``AsyncCaller`` over one writer process, forked once and kept (see the module's docstring).
    One save in flight at a time: ``AsyncCallsQueue`` finalises a request before the engine schedules the next."""

    def __init__(self):
        context = multiprocessing.get_context("fork")
        self.connection, worker_end = context.Pipe()
        self.process = context.Process(target=_serve, args=(worker_end, self.connection), daemon=True,
                                       name="checkpoint-writer")  # fmt: skip
        self.process.start()
        worker_end.close()
        self.busy = False

    def schedule_async_call(self, async_req) -> None:
        if async_req.async_fn is None:
            return
        import torch

        args = list(async_req.async_fn_args)
        if async_req.preload_fn:
            args[1] = async_req.preload_fn()  # the tensors copied to host memory, the device synchronised
        torch.cuda.synchronize()
        self.connection.send_bytes(pickle.dumps((async_req.async_fn, args, async_req.async_fn_kwargs)))
        self.busy = True

    def is_current_async_call_done(self, blocking: bool = False, no_dist: bool = False) -> bool:
        if self.busy and (blocking or self.connection.poll()):
            try:
                failure = pickle.loads(self.connection.recv_bytes())
            except EOFError:
                failure = RuntimeError(f"the checkpoint writer (pid {self.process.pid}) exited during a save")
            self.busy = False
            if failure is not None:
                raise failure
        alive = int(self.busy)
        return not alive if no_dist else bool(self.sync_all_async_calls(alive))

    def close(self, abort: bool = False) -> None:
        if self.process is not None:
            self.connection.close()  # the writer's end reads EOF and exits
            if abort:
                self.process.kill()
            self.process.join(timeout=30)
            self.process = None

    def __del__(self):
        pass  # closed by the queue, or killed with the training process (it is a daemon)


def _serve(connection, trainer_end) -> None:
    """The writer's loop: a save's function and arguments in, its failure (or None) out; exits when the training
    process closes its end or dies. Ctrl-C and SIGTERM go to the whole process group: the training process handles
    them (it finalises the save in flight before it exits), so the writer ignores them."""
    trainer_end.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        try:
            function, args, kwargs = pickle.loads(connection.recv_bytes())
        except EOFError:
            return
        try:
            function(*args, **kwargs)
            failure = None
        except Exception as error:  # sent back to be raised where the save was asked for
            failure = error
        connection.send_bytes(pickle.dumps(failure))


_queue: AsyncCallsQueue | None = None


def checkpoint_queue() -> AsyncCallsQueue:
    """This process's queue of asynchronous saves, over one :class:`ForkedWriter`, started at the first call (call it
    before CUDA starts: the fork is cheaper there)."""
    global _queue
    if _queue is None:
        use_forked_result_queue()
        _queue = AsyncCallsQueue(persistent=True)
        _queue.persistent_caller = ForkedWriter()
    return _queue
