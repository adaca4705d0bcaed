"""Where a recipe runs: one module per executor kind, and the registry the launcher reads.

Data, not code paths — the training code never asks which one runs it. On the command line::

    python launch.py pretrain executor=local ...
    python launch.py pretrain executor=docker executor.image=nvcr.io/nvidia/nemo:25.09 executor.num_gpus=1 ...
    python launch.py pretrain executor=slurm executor.partition=debug executor.time=00:10:00 ...

Each kind's module holds its ``@run.cli.factory`` and an :class:`ExecutorKind` (its shape, field rules, pre-submit
checks, last preparations, and how its jobs are followed up: their folder, logs, exit status, the scheduler's word,
liveness). Adding a kind (NeMo-Run's Kubernetes, SkyPilot or Lepton executor, say) is a new module
beside these and one entry in :data:`KINDS`.
"""

from megatron_mnist.errors import UnknownExecutor
from megatron_mnist.executors import docker_engine, local_machine, slurm_cluster
from megatron_mnist.executors.base import ExecutorKind
from megatron_mnist.executors.packaging import SourcePackager, describe_source

KINDS: dict[str, ExecutorKind] = {
    kind.name: kind for kind in (local_machine.KIND, docker_engine.KIND, slurm_cluster.KIND)
}

FACTORIES = {name: kind.factory for name, kind in KINDS.items()}
local, docker, slurm = local_machine.local, docker_engine.docker, slurm_cluster.slurm


def kind_of(executor) -> ExecutorKind:
    """The kind of a built executor; :class:`UnknownExecutor` for any other class."""
    for kind in KINDS.values():
        if type(executor) is kind.executor_type:
            return kind
    raise UnknownExecutor(
        f"{type(executor).__name__} is not an executor this launcher offers (executor= one of {', '.join(KINDS)})"
    )


def check_fields(executor) -> None:
    """Raise :class:`~megatron_mnist.errors.FieldError` for the first field that cannot be submitted safely (the
    rules of the executor's kind, in its module); an executor of another kind is refused (``UnknownExecutor``)."""
    kind_of(executor).check_fields(executor)


__all__ = ["KINDS", "FACTORIES", "ExecutorKind", "SourcePackager", "UnknownExecutor", "check_fields",
           "describe_source", "kind_of"]  # fmt: skip
