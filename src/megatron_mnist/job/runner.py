"""The job's entry point: NeMo-Run's own job runner (``nemo_run.core.runners.fdl_runner``: read the serialized
recipe, build it, call it), started and ended the cheap way. Every executor kind runs
``python -m megatron_mnist.job.runner`` where NeMo-Run would run ``python -m nemo_run.core.runners.fdl_runner``, with
the same arguments (``launcher/nemo_run_private.py`` swaps the module in the job's command, dry runs included).

Two costs of NeMo-Run's runner that a job never needed (benchmarks/RESULTS.md, a 2-core machine):

- **Start**: ``import nemo_run`` imports the Lepton cloud client (with FastAPI), networkx and the SSH stack, for
  executors that do not run inside a job: ~1.5 s of a job's start. NeMo-Run is imported as the launcher imports it
  (:func:`~megatron_mnist.lean_nemo_run.import_nemo_run`); the recipe's torch, NeMo and megatron-core are imported
  for real when the recipe is built.
- **End**: once the recipe has returned, Python's teardown of every module (``fast_exit``): a run that ended exits
  after the exit handlers and a flush, with the runner's status; a run that raises ends as Python ends it.
"""

from megatron_mnist.fast_exit import run_then_exit


def main() -> None:
    from megatron_mnist.lean_nemo_run import import_nemo_run

    import_nemo_run()
    from nemo_run.core.runners.fdl_runner import fdl_runner_app

    run_then_exit(fdl_runner_app)


if __name__ == "__main__":
    main()
