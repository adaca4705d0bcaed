"""What runs on the node: ``train`` and ``predict`` (``api``), the pieces a recipe configures (``builders``), the
engines (``engines``: Lightning's, and a loop of our own over megatron-core), the Lightning module and strategies,
Megatron's optimizer and checkpoint writer, resuming and preemption.

These import the training stack (torch, NeMo Lightning, megatron-core) — only on the node, when a job starts. A
recipe points at them by name (``run.Config(builders.trainer, ...)``), so composing one imports nothing heavy.
"""

from megatron_mnist.job.process import reproducible_cpu_math, without_megatrons_unified_memory_build
from megatron_mnist.job.progress_file import note

note("importing")  # a job's first seconds (torch, NeMo, megatron-core): said on the launcher's line, not a bare RUNNING
without_megatrons_unified_memory_build()  # before anything in the job imports megatron-core
reproducible_cpu_math()  # before torch's first matrix multiply
