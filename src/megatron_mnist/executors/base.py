"""What the launcher needs to know about one kind of executor: :class:`ExecutorKind`."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _nothing(*args) -> None:
    return None


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
        shape: a built executor → (ranks per node, nodes, GPUs per task or None for this machine's, whether the
            job sees this machine's files): what the pre-submit checks hold a recipe against.
        check_fields: raises ``executor_fields.FieldError`` for a field that cannot be submitted safely; runs
            before every submission, dry run and ``check`` (also with ``--skip-checks``).
        preflight: raises ``megatron_mnist.errors.PreflightError`` for what would make the submission fail where it runs
            (a partition, an image, a venv); skipped with ``--skip-checks``.
        prepare: last changes to the executor once the checks passed (mounts the recipes' paths, quoting).
        shared_dir: the folder every stage of a pipeline can reach, from the user's ``log_dir``.
        can_detach: whether its jobs outlive the launcher (``--detach``, then ``watch`` / ``status``); where they do
            not, ``--detach`` is refused before submitting.
        stop: (a NeMo-Run job, hard) → whether a running job was found and signalled: ``hard`` False asks it to
            save and stop (SIGTERM: the job saves its last checkpoint, then exits), True kills it at once. None:
            NeMo-Run's own cancel, which kills.
        pipeline_in_one_job: whether ``launch.py pipeline`` runs its stages in one job unless told otherwise
            (``--one-job`` / ``--separate-jobs``): where the stages need the same machine anyway, the job's
            start-up is paid once instead of once per stage.
    """

    name: str
    executor_type: type
    factory: Callable
    shape: Callable[[Any], tuple[int, int, int | None, bool]]
    check_fields: Callable[[Any], None]
    preflight: Callable[[Any], None] = _nothing
    prepare: Callable[[Any, Iterable], None] = _nothing
    shared_dir: Callable[[str, Any], str] = this_machines_folder
    can_detach: bool = False
    stop: Callable[[Any, bool], bool] | None = None
    pipeline_in_one_job: bool = False
