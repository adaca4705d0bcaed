"""The job's entry point: NeMo-Run's own job runner (``nemo_run.core.runners.fdl_runner``: read the serialized
recipe, build it, call it), started and ended the cheap way. Every executor kind runs
``python -m megatron_mnist.job.runner`` where NeMo-Run would run ``python -m nemo_run.core.runners.fdl_runner``, with
the same arguments (``launcher/nemo_run_private.py`` swaps the module in the job's command, dry runs included).

Two costs of NeMo-Run's runner that a job never needed, measured on a 2-core machine (benchmarks/RESULTS.md):

- **Start**: ``import nemo_run`` imports the Lepton cloud client (with FastAPI), networkx and the SSH stack, ~0.9 s,
  for executors that do not run inside a job. NeMo-Run is imported as the launcher imports it
  (:func:`~megatron_mnist.lean_nemo_run.import_nemo_run`); the recipe's torch, NeMo and megatron-core are imported
  for real when the recipe is built.
- **End**: once the recipe has returned, Python's own shutdown — a garbage collection and the teardown of every
  module of torch, Lightning, NeMo and megatron-core — took 2.4–2.9 s before the process exited. After a run that
  ended (its result printed, its files closed) the process runs the exit handlers that libraries registered (as a
  normal exit does: logging's flush, multiprocessing's joins, torch's), flushes its output and exits with the
  runner's status, skipping only that teardown. A run that raises ends as Python ends it (the traceback, status 1).
"""

import atexit
import ctypes
import os
import sys


def exit_now(status) -> None:
    """Exit with ``status`` (a ``SystemExit`` code) after the exit handlers, without Python's teardown."""
    code = 0 if status is None else status if isinstance(status, int) else 1
    if not isinstance(status, (int, type(None))):
        print(status, file=sys.stderr)  # what SystemExit("message") prints
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a pipe whose reader left
            pass
    try:
        ctypes.CDLL(None).fflush(None)  # what C libraries printed (NCCL, gloo) and left in their stdio buffers
    except (OSError, AttributeError):
        pass
    os._exit(code)


def main() -> None:
    from megatron_mnist.lean_nemo_run import import_nemo_run

    import_nemo_run()
    from nemo_run.core.runners.fdl_runner import fdl_runner_app

    try:
        fdl_runner_app()  # Typer's app: it ends by raising SystemExit with the command's status
    except SystemExit as ended:
        exit_now(ended.code)
    exit_now(0)


if __name__ == "__main__":
    main()
