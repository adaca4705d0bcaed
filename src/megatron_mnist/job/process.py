"""What a job does to its own process before it trains: torch-free at import."""

import os
import sys

_UNIFIED_MEMORY = "megatron.core.inference.unified_memory"


def without_megatrons_unified_memory_build() -> None:
    """megatron-core 0.15 compiles a CUDA extension (``load_inline``) when ``megatron.core.inference.unified_memory``
    is imported — which every ``import megatron.core`` model module does — for inference's dynamic context only.
    Where the build fails (a machine with nvcc and no GPU, this package's device image) it fails again at every
    import: 2.3 s of each job's start on a 2-core CPU machine, 19 s on an H200 (benchmarks/RESULTS.md). Nothing this
    package runs uses unified memory, so the job sees the module as the failed build leaves it: no unified memory."""
    import types

    if _UNIFIED_MEMORY in sys.modules:
        return
    stub = types.ModuleType(_UNIFIED_MEMORY, without_megatrons_unified_memory_build.__doc__)
    stub.has_unified_memory = False

    def create_unified_mempool():
        raise RuntimeError("megatron_mnist's jobs do not build megatron-core's unified-memory extension")

    stub.create_unified_mempool = create_unified_mempool
    sys.modules[_UNIFIED_MEMORY] = stub


def reproducible_cpu_math() -> None:
    """Intel MKL (torch's CPU matrix multiplies on x86) picks its code paths at run time and, outside its
    Conditional Numerical Reproducibility mode (``MKL_CBWR``), may round differently from one run to the next on one
    machine (psi4 and Caffe report it; both set ``MKL_CBWR=AUTO``). This package promises the same losses bit for bit
    from one recipe and seed, and CI once saw two CPU runs differ by one float32 ulp (1.5e-8) in 4 of 20 logged
    losses; this machine never reproduced it, so MKL is the likely source, not a proven one. ``AUTO`` keeps MKL to
    one path for this CPU in every run. MKL reads it at its first call, so setting it here, before torch does any
    math, is in time (tests/unit/test_process.py reads MKL's mode back). A user's own ``MKL_CBWR`` wins."""
    os.environ.setdefault("MKL_CBWR", "AUTO")


def freeze_heap() -> None:
    """Exempt everything imported so far from garbage collection.

    NeMo, Megatron and Lightning leave millions of long-lived objects on the heap. Python's periodic full
    collections walk all of them (0.7 s each, a stall every few hundred steps), and Megatron's checkpoint save calls
    ``gc.collect()`` twice per save. Frozen, they are skipped; what training allocates is still collected.

    A process's first freeze collects only the young generations: a full collection there walks the ~800,000
    objects the imports left (0.45 s of a job's start on a 2-core machine) to find ~200 unreachable ones, which stay
    on the heap, frozen, instead. A later freeze (the next stage of a pipeline run in one job) collects fully: the
    stage before is garbage by then (its model, its optimizer), and the frozen heap is not walked.
    """
    import gc

    gc.collect(2 if gc.get_freeze_count() else 1)  # 2: every generation; 1: the young ones
    gc.freeze()
