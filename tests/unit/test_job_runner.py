"""The job's runner (``megatron_mnist.job.runner``): NeMo-Run's own runner, leaner at both ends, ending with the
status NeMo-Run's would — run as a job runs it, in a fresh process on a serialized task."""

import os
import subprocess
import sys
from pathlib import Path

import nemo_run as run
import pytest
from nemo_run.core.serialization.zlib_json import ZlibJSONSerializer

from megatron_mnist.launcher import nemo_run_private as private


# the tasks: functions of this module, which the job imports as it imports a recipe's (this folder on its path)
def say(text: str) -> None:
    print(text)


def exit_with(status: int) -> None:
    sys.exit(status)


def fail() -> None:
    int("not a number")


def loaded(names: list) -> None:
    print(sorted(name for name in names if name in sys.modules))


def run_task(tmp_path, task, module: str) -> subprocess.CompletedProcess:
    config = tmp_path / "task"
    config.write_text(ZlibJSONSerializer().serialize(task))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    env.pop("PYTHONUNBUFFERED", None)  # stdout a pipe, block-buffered: what is printed must be flushed at the exit
    return subprocess.run([sys.executable, "-m", module, "-n", "t", str(config)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=env)  # fmt: skip


@pytest.mark.parametrize(
    "task, status, out",
    [
        (run.Partial(say, "printed by the task"), 0, "printed by the task"),  # stdout a pipe: flushed before exit
        (run.Partial(exit_with, 3), 3, ""),  # a task's own SystemExit status
        (run.Partial(fail), 1, ""),  # a task that raises: its traceback, status 1
    ],
)
def test_the_runner_ends_as_nemo_runs_does(tmp_path, task, status, out):
    ours = run_task(tmp_path, task, private.JOB_RUNNER)
    theirs = run_task(tmp_path, task, private.NEMO_RUN_JOB_RUNNER)
    assert ours.returncode == theirs.returncode == status, ours.stderr[-2000:]
    assert ours.stdout.strip() == theirs.stdout.strip() == out
    if status == 1:
        assert "ValueError: invalid literal for int()" in ours.stderr
        assert "ValueError: invalid literal for int()" in theirs.stderr


def test_the_runner_imports_nemo_run_without_the_lepton_client(tmp_path):
    task = run.Partial(loaded, ["leptonai", "fastapi"])
    assert run_task(tmp_path, task, private.JOB_RUNNER).stdout.strip() == "[]"
    assert run_task(tmp_path, task, private.NEMO_RUN_JOB_RUNNER).stdout.strip() == "['fastapi', 'leptonai']"


def test_every_job_of_the_launchers_experiments_runs_our_runner(tmp_path, monkeypatch):
    monkeypatch.setenv("NEMORUN_HOME", str(tmp_path))
    executor = run.LocalExecutor(ntasks_per_node=2, launcher="torchrun")  # torchrun's wrapper around the command
    with private.QuietExperiment("t", executor=executor, log_level="WARN") as exp:
        exp.add(run.Partial(say, "x"), name="job")
        exp.add(run.Script(inline="echo hi"), name="script")
        exp.dryrun(log=False)
        task_args = " ".join(arg for role in exp.jobs[0]._executable.roles for arg in [role.entrypoint, *role.args])
        script_args = " ".join(arg for role in exp.jobs[1]._executable.roles for arg in role.args)
    assert f"-m {private.JOB_RUNNER}" in task_args and private.NEMO_RUN_JOB_RUNNER not in task_args
    assert private.JOB_RUNNER not in script_args  # a script names no runner
