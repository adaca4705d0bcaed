"""What the launcher needs to know about one kind of executor, to submit a job and to follow it up:
:class:`ExecutorKind`, and :class:`JobFolder`, a job directory read on this machine."""

import os
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from megatron_mnist.job_protocol import PROGRESS_FILE


class Shape(NamedTuple):
    """What an executor starts, as the pre-submit checks hold a recipe against it."""

    ranks_per_node: int
    nodes: int
    gpus_per_task: int | None  # None: this machine's (the local executor)
    sees_local_files: bool  # whether the job reads this machine's files (paths are checked here before submitting)


def _nothing(*args) -> None:
    return None


def _no_word(*args) -> dict:
    return {}


class JobFolderUnreachable(OSError):
    """Where a job's folder lies cannot be reached now (a login node behind SSH): one line, what the connection said."""


class JobFolder:
    """A task's job directory as the launcher reads it: the progress file, the logs and exit-status files, and the
    scheduler's word on the job. This one reads it on this machine (local, Docker, Slurm reached on this machine); a
    kind whose jobs' files lie elsewhere subclasses it (Slurm over SSH: ``slurm_cluster.ClusterJobFolder``).
    Reading never raises for a file not yet written: ``read`` answers "", ``find`` leaves it out."""

    def __init__(self, executor):
        self.path = str(executor.job_dir)

    @property
    def where(self) -> str:
        """The folder as the user reaches it (printed beside a task's state)."""
        return self.path

    def read(self, name: str) -> str:
        """A file of the folder (``progress.json``), or "" while there is none."""
        try:
            return Path(self.path, name).read_text(errors="replace")
        except OSError:
            return ""

    def find(self, patterns: Iterable[str]) -> dict[str, str]:
        """The non-empty files matching ``patterns`` at any depth, by path, pattern by pattern and sorted within."""
        found, folder = {}, Path(self.path)
        for pattern in patterns:
            for path in sorted(folder.glob(f"**/{pattern}")) if folder.is_dir() else []:
                if path.stat().st_size:
                    found[str(path)] = path.read_text(errors="replace")
        return found

    def run(self, command: str) -> str:
        """The output of a read-only command where the job's scheduler is (``scontrol show job``)."""
        return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30).stdout


def progress_in_job_dir(executor) -> str:
    """Where the job writes its progress file, as the job sees it: its job directory, which is this machine's."""
    return os.path.join(executor.job_dir, PROGRESS_FILE)


def this_machines_folder(log_dir: str, executor) -> str:
    """``log_dir`` on this machine, absolute: where the job sees this machine's files."""
    return str(Path(log_dir).resolve())


@dataclass(frozen=True)
class ExecutorKind:
    """One kind of NeMo-Run executor as this package offers it (``executor=NAME`` on the command line).

    Attributes:
        name: the command line's ``executor=NAME``.
        executor_type: the NeMo-Run executor class its factory builds (how a built executor is recognised).
        factory: the ``@run.cli.factory`` returning a ``run.Config`` of that class; ``executor.KEY=VALUE`` sets
            its arguments or the executor's fields.
        shape: a built executor → its :class:`Shape`: what the pre-submit checks hold a recipe against.
        check_fields: raises ``executor_fields.FieldError`` for a field that cannot be submitted safely; runs
            before every submission, dry run and ``check`` (also with ``--skip-checks``).
        preflight: raises ``megatron_mnist.errors.PreflightError`` for what would make the submission fail where it runs
            (a partition, an image, a venv); skipped with ``--skip-checks``.
        adapt_to_recipes: last changes to the executor once the checks passed (mounts the recipes' paths, quoting).
        shared_dir: the folder every stage of a pipeline can reach, from the user's ``log_dir``.
        can_detach: whether its jobs outlive the launcher (``--detach``, then ``watch`` / ``status``); where they do
            not, ``--detach`` is refused before submitting.
        stop: (a NeMo-Run job, hard) → whether a running job was found and signalled: ``hard`` False asks it to
            save and stop (SIGTERM: the job saves its last checkpoint, then exits), True kills it at once. None:
            NeMo-Run's own cancel, which kills.
        pipeline_in_one_job: whether ``launch.py pipeline`` runs its stages in one job unless told otherwise
            (``--one-job`` / ``--separate-jobs``): where the stages need the same machine anyway, the job's
            start-up is paid once instead of once per stage.

    Following a job up (``watch``, ``status``, ``logs``, the summary and the log tail of a failed task):
        job_folder: a built executor → the :class:`JobFolder` that reads its job directory where it lies.
        progress_path: a built executor → where its job writes the progress file, as the job sees that path.
        log_names: glob patterns of its jobs' logs in the job directory, the first the one a failure's tail shows.
        status_names: glob patterns of the files where the executor writes down how a job exited.
        exit_code: those files' texts by path → the job's exit status, None where they hold none.
        live_state: (a NeMo-Run job, its :class:`JobFolder`) → the scheduler's own word: ``state`` (its name for
            it, e.g. PENDING), ``reason`` (why it waits), ``restarts`` (requeues); {} where it says nothing more
            than NeMo-Run.
        alive: for a kind whose scheduler forgets its jobs when the launcher exits (NeMo-Run's local one), (a
            NeMo-Run job) → whether its processes are still running; None where the scheduler's state holds.
    """

    name: str
    executor_type: type
    factory: Callable
    shape: Callable[[Any], Shape]
    check_fields: Callable[[Any], None]
    preflight: Callable[[Any], None] = _nothing
    adapt_to_recipes: Callable[[Any, Iterable], None] = _nothing
    shared_dir: Callable[[str, Any], str] = this_machines_folder
    can_detach: bool = False
    stop: Callable[[Any, bool], bool] | None = None
    pipeline_in_one_job: bool = False
    job_folder: Callable[[Any], JobFolder] = JobFolder
    progress_path: Callable[[Any], str] = progress_in_job_dir
    log_names: tuple[str, ...] = ()
    status_names: tuple[str, ...] = ()
    exit_code: Callable[[dict[str, str]], int | None] = _nothing
    live_state: Callable[[Any, JobFolder], dict] = _no_word
    alive: Callable[[Any], bool] | None = None
