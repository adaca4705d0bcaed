"""Recipes from the files NeMo-Run's ``--to-yaml`` / ``--to-toml`` / ``--to-json`` write.

NeMo-Run 0.11 cannot run its own export: ``--yaml FILE`` applies the file's top-level keys as overrides of the
command's recipe and stops at ``_partial_`` ("No parameter named '_partial_'"), and its YAML deserializer reads
string values through the CLI parser, so a value that names a registered factory (``model.task: pretrain``)
becomes that factory's recipe. This loader reads the file as the exporter wrote it: every mapping with a
``_target_`` is a ``run.Config`` of that callable (``run.Partial`` with ``_partial_: true``), every other value is
taken as it is.

A file is code: each ``_target_`` is called where the job runs. So every ``_target_`` must name the entry function
(``train`` / ``predict``) or one of the builders recipes use (``builders.BUILDERS``), checked by name before anything
is imported — a file naming ``subprocess.getoutput`` is one line and exit 2, and its module is never imported.
"""

import importlib
import json
from pathlib import Path

import nemo_run as run
import yaml

from megatron_mnist.errors import ConfigFileError
from megatron_mnist.job import api, builders
from megatron_mnist.launcher.moved_modules import MOVED


def _dotted(fn) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


# the names a file may give its targets: today's, and those written before the launcher/job split (moved_modules)
ALLOWED_TARGETS = frozenset(
    name
    for fn in (api.train, api.predict, *builders.BUILDERS)
    for name in (
        _dotted(fn),
        *(f"{old}.{fn.__qualname__}" for old, new in MOVED.items() if new == fn.__module__),
    )
)


def _import(target_path) -> object:
    """The callable a ``_target_`` names (ImportError, AttributeError or ValueError where it names none)."""
    module_name, _, attr = str(target_path).rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


def _build(node, where: str):
    if isinstance(node, dict) and "_target_" in node:
        node = dict(node)
        target_path = node.pop("_target_")
        kind = run.Partial if node.pop("_partial_", False) else run.Config
        if not isinstance(target_path, str) or target_path not in ALLOWED_TARGETS:
            raise ConfigFileError(
                f"{where}_target_={target_path!r} is not allowed: a recipe file may name only the callables "
                f"recipes use ({', '.join(sorted(_short_targets()))} of megatron_mnist.job)"
            )
        try:
            target = _import(target_path)
        except (ImportError, AttributeError, ValueError) as e:
            raise ConfigFileError(f"{where}_target_={target_path!r} cannot be imported ({e})") from None
        fields = {key: _build(value, f"{where}{key}.") for key, value in node.items()}
        try:
            return kind(target, **fields)
        except (TypeError, ValueError) as e:
            raise ConfigFileError(f"{where}_target_={target_path!r}: {e}") from None
    if isinstance(node, dict):
        return {key: _build(value, f"{where}{key}.") for key, value in node.items()}
    if isinstance(node, list):
        return [_build(value, where) for value in node]
    return node


def _short_targets() -> set[str]:
    return {_dotted(fn).rsplit(".", 1)[-1] for fn in (api.train, api.predict, *builders.BUILDERS)}


def _names(target_path, target) -> bool:
    """``target_path`` is ``target``'s name, today's or an older one (``moved_modules``: the same callable)."""
    # never import a module that a file names before it is known to be ours
    if not isinstance(target_path, str) or target_path not in ALLOWED_TARGETS:
        return False
    try:
        return _import(target_path) is target
    except (ImportError, AttributeError, ValueError):
        return False


def load_recipe(path: str, target) -> run.Partial:
    """The recipe in ``path`` (.yaml/.yml, .toml or .json), which must be a ``run.Partial`` of ``target``."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigFileError(f"--yaml {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigFileError(f"--yaml {path} is not a text file (expected YAML, TOML or JSON in UTF-8)") from None
    try:
        if file.suffix == ".toml":
            import tomllib  # Python 3.11+

            data = tomllib.loads(text)
        elif file.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:  # TOML's and JSON's decode errors are ValueErrors
        raise ConfigFileError(f"--yaml {path} is not valid {file.suffix.lstrip('.') or 'YAML'}: {e}") from None
    expected = f"{target.__module__}.{target.__name__}"
    if not isinstance(data, dict) or not data.get("_partial_") or not _names(data.get("_target_"), target):
        found = data.get("_target_") if isinstance(data, dict) else type(data).__name__
        raise ConfigFileError(f"--yaml {path} holds {found!r}, not a recipe of {expected} (write one with --to-yaml)")
    return _build(data, "")
