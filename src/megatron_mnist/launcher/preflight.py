"""Checks made before anything is submitted: each problem is one line naming the bad value and what was expected.

Names and fields here; what each executor kind checks where its jobs run (a partition, an image, a venv — through
the SSH tunnel for a remote Slurm) lives in that kind's module under ``megatron_mnist/executors/``. Nothing here
imports the training stack.
"""

from megatron_mnist.errors import PreflightError
from megatron_mnist.executors import check_fields as check_executor_fields  # what each field may hold: never skipped
from megatron_mnist.names import check_name  # names reach sbatch scripts, container names, folders and commands

__all__ = ["PreflightError", "check_executor", "check_executor_fields", "check_name"]


def check_executor(executor) -> None:
    """The executor kind's own checks of where the job would run (``megatron_mnist/executors/``)."""
    from megatron_mnist.executors import kind_of

    kind_of(executor).preflight(executor)
