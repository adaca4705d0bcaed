"""``executor=local``: this machine, in a child process (torchrun for several ranks)."""

import os
import signal
import sys
from pathlib import Path
from typing import Optional

import nemo_run as run

from megatron_mnist.executors.base import ExecutorKind, Shape
from megatron_mnist.executors.fields import check_env


@run.cli.factory
def local(ntasks_per_node: int = 1, launcher: Optional[str] = None) -> run.Config[run.LocalExecutor]:
    """This machine, in a child process (``launcher="torchrun"`` with ``ntasks_per_node`` > 1 for several ranks)."""
    if ntasks_per_node < 1:
        raise ValueError(f"executor.ntasks_per_node={ntasks_per_node} must be a positive integer")
    if launcher is None and ntasks_per_node > 1:
        launcher = "torchrun"
    return run.Config(run.LocalExecutor, ntasks_per_node=ntasks_per_node, launcher=launcher)


def shape(executor: run.LocalExecutor) -> Shape:
    return Shape(executor.nproc_per_node(), executor.nnodes(), None, sees_local_files=True)


def check_fields(executor: run.LocalExecutor) -> None:
    check_env("env_vars", executor.env_vars)  # values pass as data (Popen's environment), names must be names


def use_this_interpreter(executor: run.LocalExecutor, recipes=()) -> None:
    """The job runs ``python -m nemo_run...``: make ``python`` the interpreter launching it (the project's venv),
    whether or not the venv is activated, and whatever ``executor.env_vars`` the user gave (a PATH of their own
    included: it follows)."""
    bin_dir = str(Path(sys.executable).parent)
    path = executor.env_vars.get("PATH", os.environ.get("PATH", ""))
    if path.split(os.pathsep)[0] != bin_dir:
        executor.env_vars["PATH"] = os.pathsep.join([bin_dir, path]) if path else bin_dir


def job_processes(job_dir: str | Path) -> list[int]:
    """The processes of this machine that run a local job (their command line names its job directory)."""
    needle, found = str(job_dir).encode(), []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if needle in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except (OSError, ValueError):
            continue
    return found


def alive(job) -> bool:
    """NeMo-Run's local scheduler forgets its jobs when the launcher that started them exits (and answers RUNNING
    for one killed with it): whether a process of the job is still running here."""
    return bool(job_processes(job.executor.job_dir))


def stop(job, hard: bool) -> bool:
    """Signal the job's whole process tree: NeMo-Run's local scheduler starts each job in a session of its own (so
    a Ctrl-C on the launcher never reaches it), and its own cancel fails once the launcher that started it is gone
    (torchx's ``KeyError``)."""
    groups = set()
    for pid in job_processes(job.executor.job_dir):
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            continue
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL if hard else signal.SIGTERM)
        except ProcessLookupError:
            continue
    return bool(groups)


KIND = ExecutorKind(
    name="local",
    executor_type=run.LocalExecutor,
    factory=local,
    shape=shape,
    check_fields=check_fields,
    adapt_to_recipes=use_this_interpreter,
    stop=stop,
    pipeline_in_one_job=True,  # the stages run on this machine either way
    log_names=("stderr.log", "stdout.log"),  # torchx's local scheduler: JOB_DIR/nemo_run/APP/ROLE/REPLICA/
    alive=alive,
)
