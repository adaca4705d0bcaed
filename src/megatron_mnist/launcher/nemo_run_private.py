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


NEMO_RUN_JOB_RUNNER = "nemo_run.core.runners.fdl_runner"  # what NeMo-Run's job command runs (``python -m``)
JOB_RUNNER = "megatron_mnist.job.runner"  # what ours runs instead: the same runner, started and ended cheaply


def run_by_our_runner(job) -> None:
    """A prepared job's command (the TorchX app NeMo-Run's ``package`` built: ``Job._executable``, or each of a
    ``JobGroup``'s ``_executables``) runs :data:`JOB_RUNNER` where NeMo-Run's runs :data:`NEMO_RUN_JOB_RUNNER`, with
    the same arguments; torchrun's and Slurm's wrappers keep the module's name as one argument, as NeMo-Run gives it.
    A ``run.Script`` task names no runner and is left as it is."""
    apps = [job._executable] if hasattr(job, "_executable") else [app for app, _ in job._executables]
    for app in apps:
        for role in app.roles:
            role.args = [arg.replace(NEMO_RUN_JOB_RUNNER, JOB_RUNNER) for arg in role.args]


LOCAL_POLL_S = 0.2  # how often the launcher asks whether a local job has ended


def poll_local_jobs_often(runner) -> None:
    """While it waits, NeMo-Run asks each job's scheduler for the job's state every 2 s (``wait_and_exit``): a
    finished job is noticed 1 s late on average, a small job's time to result. A local job's state is its process's
    (and a small JSON file NeMo-Run rewrites), cheap to ask: the runner asks every :data:`LOCAL_POLL_S` for those.
    Docker's ``docker inspect`` and Slurm's ``sacct`` keep NeMo-Run's 2 s."""
    wait = runner.wait

    def waiting(app_handle, wait_interval: float = 10):
        if app_handle.startswith("local"):  # local_persistent://nemo_run/ID, NeMo-Run's local scheduler
            wait_interval = min(wait_interval, LOCAL_POLL_S)
        return wait(app_handle, wait_interval)

    runner.wait = waiting


class QuietExperiment(run.Experiment):
    """A NeMo-Run experiment without its own spinner panel (the launcher's live view shows the tasks instead), its
    status table at exit and its goodbye hints (for a `nemo experiment` CLI this package does not use).

    Its jobs run ``python -m megatron_mnist.job.runner`` (:func:`run_by_our_runner`), and a local job's end is
    noticed within :data:`LOCAL_POLL_S` (:func:`poll_local_jobs_often`). And its stages stop at the first that did
    not succeed: where the executor has no job dependencies (the local executor, Docker), NeMo-Run runs sequential
    stages one after the other, each whatever became of the one before (a pipeline predicted from the last run's
    checkpoint after its pretrain failed). ``succeeded(job)``, set by the launcher, judges a finished stage; the
    stages after one that did not succeed are never launched."""

    succeeded = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        poll_local_jobs_often(self._runner)

    def _prepare(self, exist_ok: bool = False):
        """NeMo-Run packages each job (its command, its config files), for a run and a dry run alike; then each
        job's command gets this package's runner (``job/runner.py``)."""
        super()._prepare(exist_ok=exist_ok)
        for job in self.jobs:
            run_by_our_runner(job)

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
