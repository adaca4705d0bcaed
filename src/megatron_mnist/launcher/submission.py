"""Submitting recipes: the one flow behind ``launch.py`` and the Python API — the checks, the experiment, each task's
final state, the log tail of a failed task and a summary of each run.

    from megatron_mnist import submit
    results = submit(recipe, executor=run.LocalExecutor(), name="try1")   # raises TaskFailed if a task failed

Runs where the user types: imports NeMo-Run, never the training stack.
"""

import json
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

import fiddle as fdl
import nemo_run as run
from rich.console import Console
from rich.markup import escape
from torchx.specs import AppState

from megatron_mnist import executors
from megatron_mnist.errors import InputError, PreflightError, SubmissionError
from megatron_mnist.executors.base import JobFolderUnreachable, Shape
from megatron_mnist.job import api  # torch-free at import: the functions recipes point at
from megatron_mnist.job_protocol import CONTAINER_JOB_DIR, RESULT_MARK, STAGE_MARK
from megatron_mnist.launcher.nemo_run_private import (
    QuietExperiment,
    dryrun_info,
    experiment_dir,
    experiment_id,
    task_config,
)
from megatron_mnist.launcher.recipe_checks import check_recipe, check_run_folder, check_run_name
from megatron_mnist.launcher.watch import ProgressView, attach
from megatron_mnist.names import check_name

console = Console()
LOG_TAIL_LINES = 40
NOT_RUN = "NOT RUN"  # a pipeline's stage after one that did not succeed


@dataclass
class JobFiles:
    """What the launcher reads of a task's job directory, through its executor kind: where it is (as the user
    reaches it), its logs by path (the kind's log names, the first the one a failure's tail shows), and the exit
    status its executor wrote down (None where it writes none, or has not yet)."""

    where: str
    logs: dict[str, str] = field(default_factory=dict)
    exit_code: int | None = None


@dataclass
class TaskResult:
    name: str
    state: str  # torchx's AppState name: SUCCEEDED, FAILED, CANCELLED, ...
    job_dir: Path
    exit_code: int | None = None
    summary: dict = field(default_factory=dict)  # what the job reported at its end (run dir, losses, accuracy)
    where: str = ""  # the job directory as the user reaches it (HOST:PATH through an SSH tunnel)

    @property
    def succeeded(self) -> bool:
        return self.state == "SUCCEEDED"


class TaskFailed(RuntimeError):
    """A task of a submission did not succeed; ``results`` holds every task's :class:`TaskResult`."""

    def __init__(self, results: dict[str, TaskResult]):
        self.results = results
        failed = ", ".join(f"{r.name}: {r.state}" for r in results.values() if not r.succeeded)
        super().__init__(f"{failed} (the log tail is printed above; job dirs: {_job_dirs(results)})")


def _job_dirs(results: dict[str, TaskResult]) -> str:
    return ", ".join(str(r.job_dir) for r in results.values() if not r.succeeded)


def submit(
    recipe: run.Partial,
    executor=None,
    name: str | None = None,
    detach: bool = False,
    skip_checks: bool = False,
) -> dict[str, TaskResult]:
    """Check and run one recipe as a NeMo-Run experiment, as ``launch.py`` does; wait for it (unless ``detach``).

    Returns each task's result; raises :class:`SubmissionError` for bad input (nothing submitted) and
    :class:`TaskFailed` when a task did not succeed. ``executor`` defaults to this package's local executor.
    Call it under ``if __name__ == "__main__":`` — the job imports your script's module again.
    """
    executor = executor if executor is not None else fdl.build(executors.local())
    name = name or getattr(getattr(recipe, "log", None), "name", None) or "run"
    stages = {name: recipe}
    check_submission(name, executor, stages, skip_checks=skip_checks, detach=detach)
    results = run_stages(name, stages, executor, detach=detach)
    if any(not r.succeeded for r in results.values()) and not detach:
        raise TaskFailed(results)
    return results


def check_submission(
    name: str, executor, stages: dict[str, run.Partial], skip_checks: bool = False, detach: bool = False
) -> None:
    """Before every submission, dry run and ``check``: what the job could not run safely, then (unless
    ``skip_checks``) everything else that can be known before submitting; the first problem raises
    :class:`SubmissionError`, before anything is created. Then the executor gets what the recipes need: Docker mounts
    for their absolute paths, Slurm's environment values quoted."""
    try:
        # never skipped: names become folders and job names, executor fields reach scripts and command lines
        check_name(name, "--name")
        for task in stages.values():
            check_run_name(task)
        kind = None if executor is None else executors.kind_of(executor)  # an executor of no kind: refused here
        if kind is not None:
            kind.check_fields(executor)
            if detach and not kind.can_detach:
                kinds = ", ".join(k.name for k in executors.KINDS.values() if k.can_detach)
                raise PreflightError(
                    f"--detach needs an executor whose jobs outlive the launcher (executor={kinds}): "
                    f"{kind.name}'s jobs are followed by the launcher, so run without --detach"
                )
        if not skip_checks:
            shape = executor_shape(executor)
            ranks = (shape.ranks_per_node, shape.nodes)
            for index, task in enumerate(stages.values()):
                # a later pipeline stage starts from files an earlier one has yet to write
                check_recipe(task, ranks=ranks, executor_gpus=shape.gpus_per_task,
                             check_paths=shape.sees_local_files and index == 0)  # fmt: skip
                if shape.sees_local_files:  # every stage's own run folder is there now: one it can continue
                    check_run_folder(task, ranks=ranks, executor_gpus=shape.gpus_per_task)
            if kind is not None:
                kind.preflight(executor)  # where the job would run: a partition, an image, a venv
    except InputError as e:  # a name, a field, the recipe, the run folder, the data, a checkpoint, the executor
        raise SubmissionError(str(e)) from None
    if kind is not None:
        kind.adapt_to_recipes(executor, list(stages.values()))


def executor_shape(executor) -> Shape:
    """What the executor starts; ``None`` (``--direct``) is this process."""
    if executor is None:
        return Shape(1, 1, None, sees_local_files=True)
    return executors.kind_of(executor).shape(executor)


def run_stages(
    title: str,
    stages: dict[str, run.Partial],
    executor,
    direct: bool = False,
    detach: bool = False,
    sequential: bool = True,
    tail_logs: bool = False,
    one_job: bool = False,
) -> dict[str, TaskResult]:
    """Run the stages in order as one NeMo-Run experiment; each task's result, printed with a summary of its run.
    ``one_job``: the stages run one after the other in one job (one task named ``title``, ``api.in_one_process``),
    paying the job's start-up once; each stage's result is read from its part of that job's log.

    ``run.run`` returns None even when the job failed (NVIDIA-NeMo/Run#289): read each task's state and show the
    log tail of a failed one.
    """
    if direct or executor is None:
        results = {}
        for name, task in stages.items():
            if results and not all(r.succeeded for r in results.values()):
                results[name] = TaskResult(name, NOT_RUN, Path.cwd())
                console.print(f"{name}: {NOT_RUN} (a stage before it did not succeed)", highlight=False)
                continue
            console.print(f"[bold cyan]Running {name} in this process[/bold cyan]")
            try:
                fdl.build(task)()
                results[name] = TaskResult(name, "SUCCEEDED", Path.cwd())
            except Exception as e:  # the stage's own error, as a job's log would show it; the later stages stop
                console.print(
                    f"[bold red]{name} failed: {type(e).__name__}: {escape(str(e))}[/bold red]", soft_wrap=True
                )
                results[name] = TaskResult(name, "FAILED", Path.cwd())
        return results
    view = None
    with StopOnCtrlC() as ctrl_c:
        try:
            with quiet_experiment(title, executor) as exp:
                ctrl_c.exp = exp
                exp.succeeded = lambda job: outcome(job)[0] == "SUCCEEDED"  # a later stage runs only after that
                for name, task in ({title: in_one_job(stages)} if one_job else stages).items():
                    exp.add(task, name=name)
                attach(exp)  # each job writes progress where the view (and `launch.py watch`) reads it
                if not detach and not tail_logs:
                    view = ProgressView(exp).start()
                # sequential: on Slurm the stages become jobs with afterok dependencies (so a detached pipeline
                # still chains); elsewhere each starts when the one before has finished. A sweep's run side by side.
                exp.run(sequential=sequential, detach=detach, tail_logs=tail_logs)
        finally:  # the view runs until every job has ended: leaving the experiment's `with` is where that is waited for
            if view is not None:
                view.stop()
    console.print(
        f"experiment {experiment_id(exp)}: {experiment_dir(exp)}", soft_wrap=True, highlight=False, markup=False
    )
    if detach:
        console.print(f"submitted; follow it with: python launch.py status {experiment_id(exp)}")
        return {job.id: TaskResult(job.id, "SUBMITTED", Path(job.executor.job_dir)) for job in exp.jobs}
    # Leaving the `with` waits for the jobs; Job.state then holds what they ended with (asking the local
    # scheduler afterwards can answer RUNNING or UNKNOWN).
    results, read = {}, {}
    for job in exp.jobs:
        if not job.launched:  # a stage before it did not succeed (QuietExperiment)
            results[job.id] = TaskResult(job.id, NOT_RUN, Path(job.executor.job_dir))
            continue
        files = job_files(job.executor)
        for result in task_results(job, files):
            results[result.name], read[result.name] = result, files
    for result in results.values():
        if result.state == NOT_RUN:
            console.print(f"{result.name}: {NOT_RUN} (a stage before it did not succeed)", highlight=False)
            continue
        status = result.state if result.exit_code is None else f"{result.state} (exit code {result.exit_code})"
        console.print(
            f"{result.name}: {status}  job dir: {result.where}", soft_wrap=True, highlight=False, markup=False
        )
        for line in summary_lines(result.summary):
            console.print(f"  {line}", soft_wrap=True, highlight=False, markup=False)
    for result in results.values():
        if not result.succeeded and result.state not in (NOT_RUN, "CANCELLED"):
            show_log_tail(result.name, read[result.name])
    if ctrl_c.pressed:
        raise KeyboardInterrupt  # the summary is printed; the launcher exits 130, as torchrun and Lightning do
    return results


def in_one_job(stages: dict[str, run.Partial]) -> run.Partial:
    """The stages as one task: ``api.in_one_process`` runs them in order in one job."""
    return run.Partial(api.in_one_process, stages=dict(stages))


def stage_names(job) -> list[str] | None:
    """The stages of a task that runs several in one job (:func:`in_one_job`), else None."""
    task = task_config(job)
    if getattr(task, "__fn_or_cls__", None) is not api.in_one_process:
        return None
    return list(task.stages)


def task_results(job, files: JobFiles, state: str | None = None) -> list[TaskResult]:
    """A finished task's result (``state``: how it ended, where the caller knows better than ``job.state``); for a
    pipeline run as one job, each stage's, as if it had been a job of its own: its result line from the part of the
    log after its mark; a stage that started and left none ended as the job did (FAILED where the job exited 0
    regardless); the stages after it NOT RUN."""
    job_dir = Path(job.executor.job_dir)
    if state is None:
        state, summary = outcome(job, files)
        job_state = settled_state(job.state, files).name
    else:
        summary, job_state = job_summary(job_dir, files), state
    code, where = (files.exit_code if state != "SUCCEEDED" else None), files.where
    names = stage_names(job)
    if names is None:
        return [TaskResult(job.id, state, job_dir, code, summary, where)]
    parts = stage_logs(files.logs)
    results = []
    for name in names:
        if name not in parts:
            results.append(TaskResult(name, NOT_RUN, job_dir))
            continue
        summary = result_in(job_dir, [parts[name]])
        ended = ended_state(summary) if summary else ("FAILED" if job_state == "SUCCEEDED" else job_state)
        results.append(TaskResult(name, ended, job_dir, code if ended != "SUCCEEDED" else None, summary, where))
    return results


def stage_logs(logs: dict[str, str]) -> dict[str, str]:
    """A one-job pipeline's logs (texts by path) cut at each stage's mark: {stage: its lines}."""
    parts = {}
    for text in logs.values():
        current = None  # each log file on its own: the marks and result lines are rank 0's stdout
        for line in text.splitlines(keepends=True):
            if STAGE_MARK in line:
                current = line.split(STAGE_MARK, 1)[1].strip()
                parts[current] = ""
            elif current is not None:
                parts[current] += line
    return parts


def outcome(job, files: JobFiles | None = None, state: AppState | None = None) -> tuple[str, dict]:
    """A finished task's state (``state``, else the job's own) and its run's summary: SUCCEEDED only for a run that
    ran to its end — one that a signal stopped (Ctrl-C, ``cancel``) saved its last checkpoint and exited 0, and is
    CANCELLED."""
    if files is None:
        files = job_files(job.executor)
    state = settled_state(job.state if state is None else state, files).name
    summary = job_summary(Path(job.executor.job_dir), files)
    return ("CANCELLED" if state == "SUCCEEDED" and summary.get("stopped_by") else state), summary


def ended_state(summary: dict) -> str:
    """How a task that exited normally ended, by its result line: SUCCEEDED, CANCELLED (stopped by a signal
    before its last step, its checkpoint saved), or FAILED (no result: it died)."""
    if not summary:
        return "FAILED"
    return "CANCELLED" if summary.get("stopped_by") else "SUCCEEDED"


def stop_task(exp, job, hard: bool) -> bool:
    """Ask a task to save and stop (``hard``: kill it), the way its executor kind does; False if none was running."""
    stop = executors.kind_of(job.executor).stop
    if stop is None:
        exp.cancel(job.id)
        return True
    return stop(job, hard)


class StopOnCtrlC:
    """Ctrl-C while the launcher waits, as Lightning and torchrun users expect: the first asks every running task
    to save its last checkpoint and stop (and no later stage starts), the second stops them at once. The launcher
    then prints the summary and exits 130."""

    def __init__(self):
        self.exp, self.pressed, self._previous = None, 0, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_ctrl_c)
        return self

    def _on_ctrl_c(self, signum, frame) -> None:
        self.pressed += 1
        hard = self.pressed > 1
        running = [job for job in (self.exp.jobs if self.exp is not None else []) if job.launched]
        for job in running:
            stop_task(self.exp, job, hard)
        if hard:
            console.print("\nCtrl-C again: the tasks are stopped now, without saving", highlight=False)
            raise KeyboardInterrupt
        names = ", ".join(job.id for job in running) or "no task"
        console.print(
            f"\nCtrl-C: asking {names} to save the last checkpoint and stop (Ctrl-C again to stop at once)",
            highlight=False,
        )

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def quiet_experiment(title: str, executor) -> run.Experiment:
    return QuietExperiment(title, executor=executor, enable_goodbye_message=False, skip_status_at_exit=True)


def settled_state(state: AppState, files: JobFiles) -> AppState:
    """The job's state, corrected by the exit status its executor wrote down: NeMo-Run's Docker monitor can lose a
    container that exited 0 (seen once in CI under load) and answer a state other than SUCCEEDED."""
    return AppState.SUCCEEDED if state != AppState.SUCCEEDED and files.exit_code == 0 else state


def job_location(executor) -> str:
    """The task's job directory as the user reaches it: HOST:PATH behind an SSH tunnel, else the local path."""
    return executors.kind_of(executor).job_folder(executor).where


def job_files(executor) -> JobFiles:
    """A task's logs and exit status, read where its executor kind keeps them (here, or on the login node through
    the SSH tunnel); an unreachable folder is said in ``where``, with nothing read."""
    kind = executors.kind_of(executor)
    folder = kind.job_folder(executor)
    try:
        found = folder.find(kind.log_names + kind.status_names)
    except JobFolderUnreachable as e:
        return JobFiles(f"{folder.where} (unreachable: {e})")
    logs = {path: text for path, text in found.items() if _named(path, kind.log_names)}
    status = {path: text for path, text in found.items() if _named(path, kind.status_names)}
    return JobFiles(folder.where, logs, kind.exit_code(status))


def _named(path: str, patterns: tuple[str, ...]) -> bool:
    return any(Path(path).match(pattern) for pattern in patterns)


def show_log_tail(name: str, files: JobFiles) -> None:
    if not files.logs:
        console.print(f"[bold red]{name} failed; no log found under {escape(files.where)}[/bold red]", soft_wrap=True)
        return
    path, text = next(iter(files.logs.items()))
    lines = text.splitlines()[-LOG_TAIL_LINES:]
    console.print(f"[bold red]{name} failed; last {len(lines)} lines of {path}:[/bold red]", soft_wrap=True)
    print("\n".join(lines))


def job_summary(job_dir: Path, files: JobFiles) -> dict:
    """What the job reported at its end (its last result line in its logs), with paths inside a container mapped
    to the host."""
    return result_in(job_dir, files.logs.values())


def result_in(job_dir: Path, texts) -> dict:
    """The last result line in ``texts`` (log texts), as :func:`job_summary` gives it."""
    found = {}
    for text in texts:
        for line in text.splitlines():
            if RESULT_MARK in line:
                try:
                    found = json.loads(line.split(RESULT_MARK, 1)[1])
                except json.JSONDecodeError:
                    continue
    for key, value in found.items():
        if isinstance(value, str) and (value == CONTAINER_JOB_DIR or value.startswith(CONTAINER_JOB_DIR + "/")):
            found[key] = str(job_dir) + value[len(CONTAINER_JOB_DIR) :]
    return found


def summary_lines(summary: dict) -> list[str]:
    """The console's account of one finished run."""
    if not summary:
        return []
    parts = [f"run: {summary['run_dir']}"]
    if "step" in summary:
        parts.append(f"steps: {summary['step']}")
    for key in ("train_loss", "val_loss"):
        if summary.get(key) is not None:
            parts.append(f"{key} {summary[key]:.4f}")
    if summary.get("accuracy") is not None:
        parts.append(f"held-out accuracy {summary['accuracy']:.4f} on {summary['num_digits']} digits")
    elif "num_digits" in summary:
        parts.append(f"{summary['num_digits']} digits predicted")
    lines = ["  ".join(parts)]
    if summary.get("resumed_at") is not None:
        lines.append(f"continued from its checkpoint at step {summary['resumed_at']}")
    if summary.get("initial_weights"):
        fresh = ", ".join(summary.get("fresh") or []) or "none"
        lines.append(f"started from the weights of {summary['initial_weights']} (started fresh: {fresh})")
    if summary.get("stopped_by"):
        lines.append(
            f"stopped by {summary['stopped_by']} at step {summary.get('step')} of {summary.get('max_steps')}: its last "
            "checkpoint is saved, and the same command continues the run"
        )
    if summary.get("report"):
        lines.append(f"report: {summary['report']}")
    if summary.get("renamed_from"):
        lines.append(
            f"note: {summary['renamed_from']} was in use by a running job, so this run wrote {summary['run_dir']}"
        )
    return lines


def dryrun(title: str, stages: dict[str, run.Partial], executor) -> None:
    """What would run: the code, each stage's resolved config, then exactly what the executor would submit."""
    console.print(f"code: {executors.describe_source()}", soft_wrap=True, highlight=False)
    for task in stages.values():
        run.dryrun_fn(task, executor=executor)
    if executor is not None:
        # NeMo-Run's dry run writes the experiment's folder and removes it, leaving experiments/ and its title's
        # folder behind: a dry run creates nothing, so those go too where they were new and are empty
        experiments = Path(run.config.get_nemorun_home()) / "experiments"
        new = [folder for folder in (experiments / title, experiments) if not folder.exists()]
        try:
            with quiet_experiment(title, executor) as exp:
                for name, task in stages.items():
                    exp.add(task, name=name)
                exp.dryrun(log=False)
                for job in exp.jobs:
                    # printed as is, never wrapped to the terminal's width: a script to read or copy
                    print(f"# ---- {job.id}: what the {type(executor).__name__} would submit ----")
                    print(dryrun_info(job), flush=True)
        finally:
            for folder in new:
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
