"""``import nemo_run`` for the launcher, without torch or the Lepton cloud client.

NeMo-Run 0.11 imports both unconditionally, and together they are ~70% of its import time on a small machine
(torch ~1.5 s, only to register a YAML representer for ``torch.dtype``; ``leptonai`` with FastAPI ~0.5 s, for an
executor this launcher does not offer). The launcher composes, checks and submits recipes: it never needs either.

:func:`import_nemo_run` imports NeMo-Run with both held back:

- torch: the import NeMo-Run guards (``except ModuleNotFoundError``) is made to fail, and the same ``torch.dtype``
  representer is registered without torch (by the value's type name), so a recipe holding a dtype still serialises
  as NeMo-Run writes it. torch stays importable afterwards, for real.
- Lepton: ``nemo_run.core.execution.lepton`` is a placeholder whose ``LeptonExecutor`` cannot be built (NeMo-Run
  only names the class in ``isinstance`` checks). This is why only the launcher calls it, first: a Python program
  that imports ``megatron_mnist`` and ``nemo_run`` itself keeps the real Lepton executor.

``networkx`` (~0.1 s), used only inside a function (to order a pipeline's jobs), is imported lazily
(``importlib.util.LazyLoader``): on its first use.

It relies on NeMo-Run's module layout; ``tests/unit/test_lean_nemo_run.py`` pins it and fails when it changes.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

HELD_BACK = ("torch", "leptonai")
LAZY = ("networkx",)
LEPTON_MODULE = "nemo_run.core.execution.lepton"


class _HoldBack(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in HELD_BACK:
            raise ModuleNotFoundError(f"{name} is held back while the launcher imports NeMo-Run", name=name)
        return None


class _Lazy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in LAZY:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


class LeptonExecutor:
    """Stands in for NeMo-Run's Lepton executor in the launcher, which does not offer it."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError(
            "the Lepton executor is not available in megatron-mnist's launcher; build run.LeptonExecutor in your "
            "own Python program (import nemo_run there)"
        )


def _represent_torch_dtype(dumper, data):
    """NeMo-Run's own representer for ``torch.dtype`` (its serialization/yaml.py), keyed by name instead of type."""
    if type(data).__module__ == "torch" and type(data).__name__ == "dtype":
        return dumper.represent_data({"_target_": str(data), "_call_": False})
    return dumper.represent_undefined(data)


def import_nemo_run():
    """NeMo-Run, imported without torch and leptonai when it is not imported yet (else as it is)."""
    if "nemo_run" in sys.modules:
        return sys.modules["nemo_run"]
    placeholder = types.ModuleType(LEPTON_MODULE, "megatron-mnist's launcher: Lepton is not offered here")
    placeholder.LeptonExecutor = LeptonExecutor
    finders = [_HoldBack(), _Lazy()]
    torch_was_imported = "torch" in sys.modules
    sys.modules[LEPTON_MODULE] = placeholder
    sys.meta_path[:0] = finders
    try:
        import nemo_run
    finally:
        for finder in finders:
            sys.meta_path.remove(finder)
    if not torch_was_imported:
        import yaml

        # the fallback representer of PyYAML's safe dumper (key None): reached only by types with no representer
        yaml.SafeDumper.add_representer(None, _represent_torch_dtype)
    return nemo_run
