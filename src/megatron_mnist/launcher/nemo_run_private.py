"""Every private name of NeMo-Run this package uses, in one place, for NeMo-Run 0.11.

NeMo-Run has no public API for these, and each is used for a reason given where it is defined here. The launcher
also subclasses ``RunContext`` and overrides its ``cli_execute``, ``parse_executor``, ``parse_fn`` and
``_execute_task`` (``LaunchContext`` in ``launcher/cli.py``). ``tests/unit/test_nemo_run_private.py`` pins the
version and checks that every name below still exists with the shape used: a NeMo-Run upgrade that moves one fails
there, not in a user's run.
"""

import functools

import nemo_run as run
from nemo_run.cli.api import RunContext
from nemo_run.cli.api import _parse_prefixed_args as parse_prefixed_args  # noqa: F401  `executor=NAME executor.k=v`
from nemo_run.cli.api import _serialize_configuration as serialize_configuration  # noqa: F401  --to-yaml/toml/json
from nemo_run.run.torchx_backend import runner as torchx_runner

VERSION = "0.11"
RUN_CONTEXT_OVERRIDES = ("cli_execute", "parse_executor", "parse_fn", "_execute_task", "_should_continue")
DONE_FILE = run.Experiment._DONE_FILE  # written when an experiment finished: `launch.py list` shows how long it took


def task_config(job):
    """A job's task as a config: an experiment loaded by id (``status``, ``watch``) keeps it serialized, as the
    zlib-JSON string NeMo-Run wrote, until it runs again."""
    if isinstance(job.task, str):
        from nemo_run.core.serialization.zlib_json import ZlibJSONSerializer

        return ZlibJSONSerializer().deserialize(job.task)
    return job.task


def _not_launched(*args, **kwargs) -> None:
    return None


def add_command(entrypoint, app) -> None:
    """Register a recipe's command on our Typer app. ``is_main``: skip loading NeMo's own CLI entry points, which
    import ``nemo.collections.llm`` (~10 s) just to build this command line."""
    entrypoint._add_command(app, is_main=True)


def should_continue(context: RunContext, skip_confirmation: bool) -> bool:
    """NeMo-Run's "Continue? [y/N]" prompt (skipped with --yes)."""
    return context._should_continue(skip_confirmation)


def experiment_id(experiment: run.Experiment) -> str:
    return experiment._id


def experiment_dir(experiment: run.Experiment) -> str:
    return experiment._exp_dir


def dryrun_info(job) -> object:
    """What a job's dry run prepared: the exact sbatch script / container spec / command (printed unwrapped)."""
    return job._dryrun_info


def scan_scheduler_entry_points_once() -> None:
    """NeMo-Run builds a TorchX runner for every experiment it opens, and each scans every installed package's entry
    points for schedulers (~20 ms): 0.14 s of ``launch.py list`` with 7 runs. The installed packages do not change
    while the launcher runs, so the launcher scans once (each runner gets its own copy of the table)."""
    if hasattr(torchx_runner.get_scheduler_factories, "scan"):
        return  # already wrapped
    scan = functools.cache(torchx_runner.get_scheduler_factories)

    def scanned_once():
        return dict(scan())

    scanned_once.scan = scan
    torchx_runner.get_scheduler_factories = scanned_once


class QuietExperiment(run.Experiment):
    """A NeMo-Run experiment without its own spinner panel (the launcher's live view shows the tasks instead), its
    status table at exit and its goodbye hints (for a `nemo experiment` CLI this package does not use).

    And one whose stages stop at the first that did not succeed: where the executor has no job dependencies (the
    local executor, Docker), NeMo-Run runs sequential stages one after the other, each whatever became of the one
    before (a pipeline predicted from the last run's checkpoint after its pretrain failed). ``succeeded(job)``, set
    by the launcher, judges a finished stage; the stages after one that did not succeed are never launched."""

    succeeded = None

    def _wait_for_jobs(self, jobs):
        super()._wait_for_jobs(jobs)
        if self.succeeded is not None and not all(self.succeeded(job) for job in jobs):
            for job in self.jobs:
                if not job.launched:
                    job.launch = _not_launched  # NeMo-Run's loop calls it for the next stages: they stay unlaunched

    def _initialize_live_progress(self):
        pass

    def _add_progress(self, job):
        pass

    def _update_progress(self, job, state):
        pass
