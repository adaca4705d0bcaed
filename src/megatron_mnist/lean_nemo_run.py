"""``import nemo_run`` for the launcher and the job's runner, without torch or the Lepton cloud client.

NeMo-Run 0.11 imports both unconditionally, and together they are ~70% of its import time on a small machine
(torch ~1.5 s, only to register a YAML representer for ``torch.dtype``; ``leptonai`` with FastAPI ~0.5 s, for an
executor this launcher does not offer). The launcher composes, checks and submits recipes: it never needs either.
The job's runner (``job/runner.py``) reads and builds a recipe with NeMo-Run: the recipe imports torch for real.

:func:`import_nemo_run` imports NeMo-Run with both held back:

- torch: the import NeMo-Run guards (``except ModuleNotFoundError``) is made to fail, and the same ``torch.dtype``
  representer is registered without torch (by the value's type name), so a recipe holding a dtype still serialises
  as NeMo-Run writes it. torch stays importable afterwards, for real.
- Lepton: ``nemo_run.core.execution.lepton`` is a placeholder whose ``LeptonExecutor`` cannot be built (NeMo-Run
  only names the class in ``isinstance`` checks). This is why only the launcher and the job's runner call it,
  first: a Python program that imports ``megatron_mnist`` and ``nemo_run`` itself keeps the real Lepton executor.

Two more are loaded on first use instead of at import: ``networkx`` (~0.1 s; NeMo-Run orders a pipeline's jobs with
it) and the SSH stack, ``paramiko`` with ``cryptography`` (~0.1 s; NeMo-Run's tunnel client needs it only when it
opens a connection). Each is a module whose code runs when a name it defines is first looked up (``_LoadOnFirstUse``;
not ``importlib.util.LazyLoader``, whose modules load on any access, ``__spec__`` included, so on the second
``import`` statement naming them). The two names the tunnel client takes from ``fabric`` (``Config``,
``Connection``) are callables that import fabric when called. A Slurm submit through SSH loads all of it for real.

It relies on NeMo-Run's module layout; ``tests/unit/test_lean_nemo_run.py`` pins it and fails when it changes.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

HELD_BACK = ("torch", "leptonai")
ON_FIRST_USE = ("networkx", "paramiko")
# NeMo-Run's tunnel client runs ``import paramiko.ssh_exception``: loaded ahead (exception classes; it imports nothing
# of paramiko's), that import does not load paramiko
SUBMODULES_AHEAD = {"paramiko": ("ssh_exception",)}
DEFERRED_NAMES = {"fabric": ("Config", "Connection")}  # NeMo-Run calls them; it never tests isinstance against them
LEPTON_MODULE = "nemo_run.core.execution.lepton"


class _HoldBack(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in HELD_BACK:
            raise ModuleNotFoundError(f"{name} is held back while the launcher imports NeMo-Run", name=name)
        return None


class _LoadedOnFirstUse(types.ModuleType):
    """A module whose code has not run yet: it runs when a name the module defines is first looked up.

    Names the import system sets (``__spec__``, ``__file__``) and submodules loaded ahead (``SUBMODULES_AHEAD``) are
    there already and do not load it. ``__path__`` is not: importing any other submodule loads the package first, so
    its ``__init__`` runs before its submodules, as in a plain import (paramiko's submodules import from it).
    """

    def __getattr__(self, name):  # called only for names not (yet) in the module
        real_loader = self.__dict__.get("_real_loader")
        if real_loader is None or (name.startswith("__") and name != "__path__"):
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        del self._real_loader
        self.__spec__.loader = self.__loader__ = real_loader
        if self.__spec__.submodule_search_locations is not None:
            self.__path__ = self.__spec__.submodule_search_locations
        self.__class__ = types.ModuleType
        real_loader.exec_module(self)
        return getattr(self, name)


class _LoadOnFirstUse(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return _LoadedOnFirstUse(spec.name)

    def exec_module(self, module):
        """Runs none of the module's code (that waits for its first use); loads its ``SUBMODULES_AHEAD``."""
        module.__dict__.pop("__path__", None)
        for name in SUBMODULES_AHEAD.get(module.__name__, ()):
            spec = importlib.machinery.PathFinder.find_spec(
                f"{module.__name__}.{name}", module.__spec__.submodule_search_locations
            )
            submodule = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = submodule
            spec.loader.exec_module(submodule)
            setattr(module, name, submodule)
        module._real_loader = self.loader


class _OnFirstUse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in ON_FIRST_USE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _LoadOnFirstUse(spec.loader)
        return spec


class _Deferred:
    """A callable stand-in for ``module.name`` that imports the module when it is first called."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args, **kwargs):
        return getattr(importlib.import_module(self.module), self.name)(*args, **kwargs)

    def __repr__(self):
        return f"<{self.module}.{self.name}, imported on first call>"


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
    finders = [_HoldBack(), _OnFirstUse()]
    torch_was_imported = "torch" in sys.modules
    sys.modules[LEPTON_MODULE] = placeholder
    stand_ins = {}
    for module, names in DEFERRED_NAMES.items():
        if module not in sys.modules:
            stand_ins[module] = types.ModuleType(module, "stand-ins while NeMo-Run imports, see lean_nemo_run")
            for name in names:
                setattr(stand_ins[module], name, _Deferred(module, name))
    sys.modules.update(stand_ins)
    sys.meta_path[:0] = finders
    try:
        import nemo_run
    finally:
        for finder in finders:
            sys.meta_path.remove(finder)
        for module in stand_ins:  # the real one is imported by the first call of a stand-in, or by anyone after
            del sys.modules[module]
    if not torch_was_imported:
        import yaml

        # the fallback representer of PyYAML's safe dumper (key None): reached only by types with no representer
        yaml.SafeDumper.add_representer(None, _represent_torch_dtype)
    return nemo_run
