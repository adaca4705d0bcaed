"""What runs on the node: ``train`` and ``predict`` (``api``), the pieces a recipe configures (``builders``), the
Lightning module and strategies, Megatron's optimizer and checkpoint writer, resuming and preemption.

These import the training stack (torch, NeMo Lightning, megatron-core) — only on the node, when a job starts. A
recipe points at them by name (``run.Config(builders.trainer, ...)``), so composing one imports nothing heavy.
"""

import sys as _sys
import types as _types

_UNIFIED_MEMORY = "megatron.core.inference.unified_memory"


def _without_megatrons_unified_memory_build() -> None:
    """megatron-core 0.15 compiles a CUDA extension (``load_inline``) when ``megatron.core.inference.unified_memory``
    is imported — which every ``import megatron.core`` model module does — for inference's dynamic context only.
    Where the build fails (a machine with nvcc and no GPU, this package's device image) it fails again at every
    import: 11 s of each job's start on a 2-core CPU machine, 19 s on an H200 (benchmarks/RESULTS.md). Nothing this
    package runs uses unified memory, so the job sees the module as the failed build leaves it: no unified memory."""
    if _UNIFIED_MEMORY in _sys.modules:
        return
    stub = _types.ModuleType(_UNIFIED_MEMORY, _without_megatrons_unified_memory_build.__doc__)
    stub.has_unified_memory = False

    def create_unified_mempool():
        raise RuntimeError("megatron_mnist's jobs do not build megatron-core's unified-memory extension")

    stub.create_unified_mempool = create_unified_mempool
    _sys.modules[_UNIFIED_MEMORY] = stub


_without_megatrons_unified_memory_build()
