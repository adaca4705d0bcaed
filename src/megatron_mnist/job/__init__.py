"""What runs on the node: ``train`` and ``predict`` (``api``), the pieces a recipe configures (``builders``), the
Lightning module and strategies, Megatron's optimizer and checkpoint writer, resuming and preemption.

These import the training stack (torch, NeMo Lightning, megatron-core) — only on the node, when a job starts. A
recipe points at them by name (``run.Config(builders.trainer, ...)``), so composing one imports nothing heavy.
"""
