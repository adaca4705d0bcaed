"""The modules' names before the launcher/job split and the recipes' rename, readable by the launcher.

NeMo-Run saves each experiment's tasks and executors as configs that name their functions by module path, and
``--to-yaml`` files do the same: those written before the split name ``megatron_mnist.api.train``,
``megatron_mnist.builders.trainer`` and so on; scripts written before the recipes had a package name of their own
import ``recipes.pretrain`` (now ``megatron_mnist_recipes.pretrain``). :func:`install` lets ``launch.py list``,
``status``, ``logs``, ``cancel``, ``watch``, ``--yaml`` and such scripts read them: importing an old name gives a
module that hands out the new module's attributes (the functions themselves, so a config read back names the new
paths). New code never imports the old names.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import types

MOVED = {
    **{f"megatron_mnist.{m}": f"megatron_mnist.job.{m}" for m in (
        "api", "builders", "strategies", "lightning", "megatron_optim", "megatron_writer", "checkpoint",
        "preemption", "world", "progress_file")},
    **{f"megatron_mnist.{m}": f"megatron_mnist.launcher.{m}" for m in (
        "submission", "watch", "recipe_checks", "config_files", "nemo_run_private")},
    "megatron_mnist.executor_fields": "megatron_mnist.executors.fields",
    "recipes": "megatron_mnist_recipes",
    **{f"recipes.{m}": f"megatron_mnist_recipes.{m}" for m in ("pretrain", "finetune", "predict", "pipeline",
                                                               "training")},
}  # fmt: skip


class _OldNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        module = types.ModuleType(spec.name, f"moved to {MOVED[spec.name]}")
        new = MOVED[spec.name]
        module.__getattr__ = lambda attribute: getattr(importlib.import_module(new), attribute)
        if any(other.startswith(f"{spec.name}.") for other in MOVED):
            module.__path__ = []  # a package: its moved submodules are imported through it
        return module

    def exec_module(self, module) -> None:
        pass


def install() -> None:
    """After every other finder: an old name is answered only where nothing else installed it (a project's own
    top-level ``recipes`` stays that project's)."""
    if not any(isinstance(finder, _OldNames) for finder in sys.meta_path):
        sys.meta_path.append(_OldNames())
