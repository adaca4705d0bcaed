"""Following experiments up, after (or without) the launcher that submitted them: ``launch.py list``, ``status``,
``watch``, ``logs`` and ``cancel``. Each reads a task through its executor kind (``ExecutorKind``: its job folder,
logs, exit status, the scheduler's word, liveness), so a new kind needs nothing here.

Imported by ``cli`` after NeMo-Run (``lean_nemo_run``); never imports the training stack.
"""

import sys
import time
from pathlib import Path

import nemo_run as run
import typer
from torchx.specs import AppState

from megatron_mnist import executors
from megatron_mnist.launcher import nemo_run_private
from megatron_mnist.launcher.console import console, fail
from megatron_mnist.launcher.submission import (
    ended_state,
    job_files,
    job_location,
    job_summary,
    outcome,
    stop_task,
    summary_lines,
    task_results,
)
from megatron_mnist.launcher.watch import ProgressView


def load_experiment(experiment_id: str) -> run.Experiment:
    try:
        return run.Experiment.from_id(experiment_id)
    except (AssertionError, FileNotFoundError, ValueError):
        fail(
            f"experiment {experiment_id!r} not found under {run.config.get_nemorun_home()}/experiments "
            f"(python launch.py list shows them)"
        )


def pick_jobs(exp: run.Experiment, task: str | None) -> list:
    jobs = [job for job in exp.jobs if task in (None, job.id)]
    if not jobs:
        tasks = ", ".join(job.id for job in exp.jobs)
        fail(f"experiment {nemo_run_private.experiment_id(exp)} has no task {task!r} (its tasks: {tasks})")
    return jobs


def task_states(exp: run.Experiment) -> dict[str, str]:
    """Each task's state in the experiment's order. NeMo-Run's local scheduler forgets its jobs when the launcher
    exits, and answers RUNNING for a job that was killed with it: a local job whose process is gone is FAILED,
    unless its log ends with its result. A task that ended with its result is SUCCEEDED, or CANCELLED where a
    signal stopped it before its last step (``submission.outcome``)."""
    reported = exp.status(return_dict=True) or {}
    states = {}
    for job in exp.jobs:
        reported_state = reported.get(job.id, {}).get("status", "UNKNOWN")  # an AppState ("SUCCEEDED (4)"), or not
        state = getattr(reported_state, "name", None) or str(reported_state).split(".")[-1].split()[0]
        alive = executors.kind_of(job.executor).alive
        if alive is not None and state in ("RUNNING", "PENDING", "UNKNOWN", "SUBMITTED"):
            if not alive(job):
                state = ended_state(job_summary(Path(job.executor.job_dir), job_files(job.executor)))
        elif state == "SUCCEEDED":
            state, _ = outcome(job, state=AppState.SUCCEEDED)
        states[job.id] = state
    return states


def run_folder_of(job) -> str:
    """`` (LOG_DIR/NAME)`` of a task's run, from its recipe: what tells experiments of one title apart."""
    log = getattr(nemo_run_private.task_config(job), "log", None)
    name, log_dir = getattr(log, "name", None), getattr(log, "log_dir", None)
    return f" ({Path(log_dir) / name})" if isinstance(name, str) and isinstance(log_dir, str) else ""


def list_experiments(title: str = typer.Argument("", help="only experiments with this title")):
    """List the experiments NeMo-Run recorded, oldest first: id, state of each task, start time, duration, folder."""
    from datetime import datetime

    home = Path(run.config.get_nemorun_home()) / "experiments"
    titles = [title] if title else sorted(p.name for p in home.iterdir() if p.is_dir()) if home.is_dir() else []
    rows = []
    for t in titles:
        for experiment_id in run.Experiment.catalog(t):
            folder = home / t / experiment_id
            started = datetime.fromtimestamp(int(experiment_id.rpartition("_")[2]) / 1e9)
            done = folder / nemo_run_private.DONE_FILE
            took = f"{done.stat().st_mtime - started.timestamp():.0f} s" if done.exists() else "-"
            try:
                exp = run.Experiment.from_id(experiment_id)
                folders = {job.id: run_folder_of(job) for job in exp.jobs}
                states = ", ".join(f"{k} {v}{folders[k]}" for k, v in task_states(exp).items())
            except Exception as e:  # an experiment folder NeMo-Run cannot load any more
                states = f"unreadable ({type(e).__name__})"
            rows.append(
                (started, f"{experiment_id}  {states}  started {started:%Y-%m-%d %H:%M:%S}  took {took}  {folder}")
            )
    for _, line in sorted(rows):
        console.print(line, highlight=False, soft_wrap=True)


def status(experiment_id: str):
    """Each task's state, job id and job directory, in the experiment's order."""
    exp = load_experiment(experiment_id)
    reported = exp.status(return_dict=True) or {}
    for name, state in task_states(exp).items():
        job = next(j for j in exp.jobs if j.id == name)
        where = job_location(job.executor)
        console.print(
            f"{name}: {state}  job id: {reported.get(name, {}).get('job_id')}  job dir: {where}",
            highlight=False,
            soft_wrap=True,
        )


def watch(
    experiment_id: str,
    every: float = typer.Option(None, help="seconds between updates (default: 1 on a terminal, else 10)"),
):
    """Follow a (detached) experiment: one live line per task — state, step, losses, steps/s, time left — until every
    task has ended; then each task's state and run summary. Exit status 0 only if every task succeeded."""
    exp = load_experiment(experiment_id)
    view = ProgressView(exp, states=task_states)
    if every:
        view.every = every
    view.start()
    try:
        while not all(state in ENDED for state in task_states(exp).values()):
            time.sleep(max(view.every, 2.0))
    finally:
        view.stop()
    failed = False
    states = task_states(exp)
    for job in exp.jobs:
        files = job_files(job.executor)
        where = files.where
        failed |= states[job.id] != "SUCCEEDED"
        results = task_results(job, files, states[job.id])
        if len(results) > 1:  # a pipeline run as one job: each stage's result
            console.print(f"{job.id}: {states[job.id]}  job dir: {where}", highlight=False, soft_wrap=True)
        for result in results:
            state = states[job.id] if len(results) == 1 else result.state
            console.print(f"{result.name}: {state}  job dir: {where}", highlight=False, soft_wrap=True)
            for line in summary_lines(result.summary):
                console.print(f"  {line}", highlight=False, soft_wrap=True)
    sys.exit(1 if failed else 0)


ENDED = ("SUCCEEDED", "FAILED", "CANCELLED", "UNKNOWN")


def logs(experiment_id: str, task: str = typer.Argument(None, help="a task name (default: every task)")):
    """Print a task's log (read through the SSH tunnel for a remote cluster)."""
    exp = load_experiment(experiment_id)
    for job in pick_jobs(exp, task):
        files = job_files(job.executor)
        if not files.logs:
            console.print(f"{job.id}: no log yet under {files.where}", highlight=False, soft_wrap=True)
        for path, text in files.logs.items():
            console.print(f"[bold cyan]== {job.id}: {path}[/bold cyan]", soft_wrap=True)
            print(text, end="")


def cancel(experiment_id: str, task: str = typer.Argument(None, help="a task name (default: every task)")):
    """Cancel the experiment's tasks that are still queued or running."""
    exp = load_experiment(experiment_id)
    states = task_states(exp)
    for job in pick_jobs(exp, task):
        if states[job.id] in ENDED:
            console.print(f"{job.id}: {states[job.id]} already, nothing to cancel", highlight=False)
        elif stop_task(exp, job, hard=False):
            console.print(f"{job.id}: asked to save its last checkpoint and stop (SIGTERM)", highlight=False)
        else:
            console.print(f"{job.id}: no running process found", highlight=False)
