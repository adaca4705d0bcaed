"""NeMo-Run's private names that this package uses (``megatron_mnist.launcher.nemo_run_private``): pinned, and each
checked to exist with the shape the package relies on, so that an upgrade that moves one fails here."""

import inspect
from importlib.metadata import version

import nemo_run as run
from nemo_run.cli.api import RunContext

from megatron_mnist.launcher import nemo_run_private as private
from megatron_mnist.launcher.nemo_run_private import torchx_runner


def test_the_nemo_run_version_is_the_one_these_names_were_checked_against():
    assert version("nemo_run").startswith(private.VERSION + "."), version("nemo_run")


def test_every_private_name_used_still_exists_with_its_shape():
    assert private.parse_prefixed_args(["executor=slurm", "executor.partition=debug", "x=1"], "executor") == (
        "slurm",
        ["partition=debug"],
        ["x=1"],
    )
    assert list(inspect.signature(private.serialize_configuration).parameters)[:4] == [
        "config",
        "to_yaml",
        "to_toml",
        "to_json",
    ]
    for name in private.RUN_CONTEXT_OVERRIDES:
        assert callable(getattr(RunContext, name)), name
    assert "skip_confirmation" in inspect.signature(RunContext._should_continue).parameters
    assert "is_main" in inspect.signature(run.cli.api.Entrypoint._add_command).parameters
    assert isinstance(private.DONE_FILE, str) and private.DONE_FILE
    for hook in ("_initialize_live_progress", "_add_progress", "_update_progress"):
        assert callable(getattr(run.Experiment, hook)), hook  # what QuietExperiment silences
    # what QuietExperiment wraps to stop a pipeline at its first failed stage: the wait between NeMo-Run's levels
    assert list(inspect.signature(run.Experiment._wait_for_jobs).parameters) == ["self", "jobs"]
    assert "job.launch(wait=False, runner=self._runner)" in inspect.getsource(run.Experiment._run_dag)
    # what QuietExperiment changes in each job's command, once NeMo-Run packaged it; and how it waits for a local job
    from nemo_run.run.torchx_backend import launcher, packaging

    assert f'["-m", "{private.NEMO_RUN_JOB_RUNNER}"]' in inspect.getsource(packaging.package)
    assert list(inspect.signature(run.Experiment._prepare).parameters) == ["self", "exist_ok"]
    assert "runner.wait(app_handle, wait_interval=2)" in inspect.getsource(launcher.wait_and_exit)
    assert list(inspect.signature(torchx_runner.Runner.wait).parameters) == ["self", "app_handle", "wait_interval"]


def test_the_launcher_scans_torchx_schedulers_once_and_nemo_run_uses_the_table():
    from nemo_run.run.torchx_backend import runner
    from torchx.schedulers import get_scheduler_factories

    private.scan_scheduler_entry_points_once()
    private.scan_scheduler_entry_points_once()  # idempotent: one wrapper, not two
    first, second = runner.get_scheduler_factories(), runner.get_scheduler_factories()
    assert first == second and first is not second
    assert list(first) == list(get_scheduler_factories())  # the same schedulers, in the same order (first = default)
    assert {"local_persistent", "slurm_tunnel"} <= set(first)  # NeMo-Run registers its schedulers as entry points
    assert "slurm_tunnel" in runner.get_runner()._scheduler_factories  # the name NeMo-Run's get_runner calls


def test_an_experiment_exposes_its_id_folder_and_dry_run():
    with private.QuietExperiment("t", executor=run.LocalExecutor(), log_level="WARN") as exp:
        exp.add(run.Script(inline="true"), name="job")
        exp.dryrun(log=False)
        assert private.experiment_id(exp).startswith("t_")
        assert str(private.experiment_dir(exp)).endswith(private.experiment_id(exp))
        assert private.dryrun_info(exp.jobs[0]) is not None


def test_a_local_job_is_asked_for_its_state_more_often_than_nemo_runs_2_s():
    with private.QuietExperiment("t", executor=run.LocalExecutor(), log_level="WARN") as exp:
        assert exp._runner.wait.__name__ == "waiting"  # the launcher's experiments wait through the wrapper
    asked = []
    runner = type("Runner", (), {"wait": lambda self, job, wait_interval=10: asked.append((job, wait_interval))})()
    private.poll_local_jobs_often(runner)
    runner.wait("local_persistent://nemo_run/t-1", wait_interval=2)
    runner.wait("slurm_tunnel://nemo_run/123", wait_interval=2)
    assert asked == [("local_persistent://nemo_run/t-1", private.LOCAL_POLL_S), ("slurm_tunnel://nemo_run/123", 2)]
