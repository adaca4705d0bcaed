"""``executor=local``: this machine, in a child process (torchrun for several ranks)."""

import os
import sys
from pathlib import Path
from typing import Optional

import nemo_run as run

from megatron_mnist.executors.base import ExecutorKind
from megatron_mnist.executors.fields import check_env


@run.cli.factory
def local(ntasks_per_node: int = 1, launcher: Optional[str] = None) -> run.Config[run.LocalExecutor]:
    """This machine, in a child process (``launcher="torchrun"`` with ``ntasks_per_node`` > 1 for several ranks)."""
    if ntasks_per_node < 1:
        raise ValueError(f"executor.ntasks_per_node={ntasks_per_node} must be a positive integer")
    if launcher is None and ntasks_per_node > 1:
        launcher = "torchrun"
    # The job runs `python -m nemo_run...`: make that the interpreter launching it (e.g. the project's venv),
    # whether or not the venv is activated.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return run.Config(run.LocalExecutor, ntasks_per_node=ntasks_per_node, launcher=launcher, env_vars={"PATH": path})


def shape(executor: run.LocalExecutor) -> tuple[int, int, None, bool]:
    return executor.nproc_per_node(), executor.nnodes(), None, True


def check_fields(executor: run.LocalExecutor) -> None:
    check_env("env_vars", executor.env_vars)  # values pass as data (Popen's environment), names must be names


KIND = ExecutorKind(
    name="local", executor_type=run.LocalExecutor, factory=local, shape=shape, check_fields=check_fields
)
