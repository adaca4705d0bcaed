"""Checks of a composed recipe and of CLI overrides, made before anything runs: one line each, naming the bad value
and what was expected. Cheap: they read the recipe's ``run.Config`` values and the files it names, and import
neither torch nor NeMo. The rules themselves are ``megatron_mnist/constraints.py``'s, which the node checks again,
for recipes composed in Python.
"""

import ast
import difflib
import errno
import inspect
import re
import shutil
import tempfile
import typing
from pathlib import Path

import fiddle as fdl

from megatron_mnist import constraints, defaults, run_dirs, run_record
from megatron_mnist.checkpoint_paths import CheckpointError, checkpoint_model, last_checkpoint, resolve_checkpoint
from megatron_mnist.data.idx import IDXError, check_mnist, mnist_folder
from megatron_mnist.data.split import split_sizes
from megatron_mnist.errors import RecipeError
from megatron_mnist.executors.fields import CONTROL
from megatron_mnist.job import api, builders, engines
from megatron_mnist.model.spec import CONFIG_HEADS, TASKS
from megatron_mnist.names import check_name

OVERRIDE = re.compile(r"^(?P<key>[A-Za-z_][\w.]*)(?P<op>\+=|-=|\*=|/=|=)(?P<value>.*)$", re.S)


def dotted_parameters(config: fdl.Buildable, prefix: str = "") -> dict[str, typing.Any]:
    """Every settable key of a recipe (``trainer.max_steps`` ...) with its annotation."""
    keys = {}
    for name, param in inspect.signature(config.__fn_or_cls__).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        keys[prefix + name] = param.annotation
        value = getattr(config, name, None)
        if isinstance(value, fdl.Buildable):
            keys.update(dotted_parameters(value, f"{prefix}{name}."))
    return keys


def _check_type(key: str, value: str, annotation) -> None:
    """The value must parse as the parameter's type (int, float, bool, a Literal's choices, Optional of those)."""
    text = value.strip().strip("'\"")
    if text in ("None", "null") and (
        annotation is inspect.Parameter.empty or type(None) in typing.get_args(annotation)
    ):
        return
    options = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    if typing.get_origin(annotation) is typing.Literal:
        if text not in [str(a) for a in typing.get_args(annotation)]:
            choices = ", ".join(str(a) for a in typing.get_args(annotation))
            raise RecipeError(f"{key}={value!r} is not one of {choices}")
        return
    if len(options) == 1 and typing.get_origin(options[0]) is typing.Literal:
        return _check_type(key, value, options[0])
    for kind, parse, expected in ((int, int, "an integer"), (float, float, "a number")):
        if options == [kind]:
            try:
                parse(text)
            except ValueError:
                raise RecipeError(f"{key}={value!r} is not {expected}") from None
    if options == [bool] and text.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise RecipeError(f"{key}={value!r} is not true or false")
    if len(options) == 1 and typing.get_origin(options[0]) is list or options == [list]:
        try:
            parsed = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            parsed = None
        if not isinstance(parsed, list):
            # NeMo-Run's parser would say "Failed to parse ''", naming neither the value nor the fix
            raise RecipeError(f"{key}={value!r} is not a list: quote each string, e.g. {key}=['digit_classifier']")


def check_overrides(recipe: fdl.Buildable, args: list[str]) -> None:
    """Each ``KEY=VALUE`` names a key of the recipe (else: the nearest valid one) with a value of its type."""
    keys = dotted_parameters(recipe)
    for arg in args:
        match = OVERRIDE.match(arg)
        if not match:
            raise RecipeError(f"{arg!r} is not an override: expected KEY=VALUE, e.g. trainer.max_steps=50")
        key = match["key"]
        if key not in keys:
            near = difflib.get_close_matches(key, list(keys), n=1, cutoff=0.6)
            hint = f"did you mean {near[0]}?" if near else f"valid keys include {', '.join(list(keys)[:8])}, ..."
            raise RecipeError(f"unknown override key {key!r}: {hint}")
        if match["op"] == "=" and not match["value"].strip():
            raise RecipeError(f"{key}= has no value: give one, or {key}=None to unset it")
        if CONTROL.search(match["value"]):
            # NeMo-Run's parser would keep the first line only (log.name=$'a\nb' became 'a'): refuse, never cut
            raise RecipeError(f"{key}={match['value']!r} holds a control character: a value is one line")
        if match["op"] == "=":
            _check_type(key, match["value"], keys[key])


def _get(recipe, dotted: str, default=None):
    value = recipe
    for part in dotted.split("."):
        value = getattr(value, part, None)
        if value is None:
            return default
    return value


def check_run_name(recipe: fdl.Buildable) -> None:
    """``log.name`` becomes the run's folder under ``log.log_dir``: never a path (``..``, ``a/b``), never shell code.
    Checked on every submission, ``--skip-checks`` included, and again by the job (``builders.logger``)."""
    log = getattr(recipe, "log", None)
    if log is None:
        return
    check_name(log.name, "log.name")  # fiddle answers the logger's default where unset


def check_recipe(
    recipe: fdl.Buildable, ranks: tuple[int, int] = (1, 1), check_paths: bool = True, executor_gpus=None
) -> None:
    """Sizes, batch arithmetic, and — where the job sees this machine's files — paths and GPUs.

    Args:
        ranks: (ranks per node, nodes) the executor starts: all data parallel, so the global batch must split over
            them, and the trainer's devices / num_nodes, where set, must be these.
        check_paths: the checkpoint and data paths are on this machine (not on a cluster behind SSH, and not
            written by an earlier stage of the same pipeline).
        executor_gpus: GPUs the executor gives each task (None: this machine's, for the local executor).
    """
    for key in constraints.CONSTRAINTS:
        constraints.check_value(key, _get(recipe, key))
    constraints.check_ranks(_get(recipe, "trainer.devices"), _get(recipe, "trainer.num_nodes"), ranks, "the executor")
    micro, global_ = _get(recipe, "data.micro_batch_size"), _get(recipe, "data.global_batch_size")
    if micro and global_:
        constraints.micro_batches_per_step(global_, micro, ranks[0] * ranks[1])
    accelerator = _get(recipe, "trainer.accelerator")
    if accelerator == "gpu":
        gpus = executor_gpus if executor_gpus is not None else (1 if _this_machine_has_gpus() else 0)
        if not gpus:
            raise RecipeError(
                "trainer.accelerator=gpu but the job would get no GPU "
                "(this machine has none, or the executor asks for none)"
            )
    if _get(recipe, "trainer") is not None:
        # what the node decides, checked here for where the job will run: a precision the CPU cannot train in,
        # graph mode without the megatron loop or without a GPU
        where = job_accelerator(recipe, executor_gpus)
        try:
            constraints.resolve_precision(_get(recipe, "trainer.precision"), where)
            constraints.check_graph_mode(
                _get(recipe, "trainer.loop", engines.DEFAULT), bool(_get(recipe, "trainer.cuda_graph")), where,
                _get(recipe, "trainer.precision"), _get(recipe, "data.device_resident") is not False,
            )  # fmt: skip
        except RecipeError as e:  # the node's rule, said with where this job would run
            raise RecipeError(f"{e} (the job would run on a {where.upper()})") from None
    if not check_paths:
        return
    ckpt = _get(recipe, "model.initial_ckpt_path")
    if ckpt:
        try:
            resolved = resolve_checkpoint(ckpt)
        except CheckpointError as e:
            raise RecipeError(f"model.initial_ckpt_path={ckpt!r}: {e}") from None
        check_checkpoint_fits(recipe, resolved, f"model.initial_ckpt_path={ckpt!r}", resuming=False)
    if _get(recipe, "log") is not None:
        check_writable(Path(_get(recipe, "log.log_dir", defaults.LOG_DIR)), "log.log_dir")
    root = _get(recipe, "data.root")
    if root and not Path(root).is_dir() and not _get(recipe, "data.download"):
        raise RecipeError(f"data.root={root!r} is not a directory (expected a folder holding MNIST's IDX files)")
    if not _get(recipe, "data.download"):
        check_data(recipe, root, ranks[0] * ranks[1])


def check_data(recipe: fdl.Buildable, root: str | None, ranks: int) -> None:
    """The data as the job will read it (every file whole: full MNIST ~0.3 s), so that a truncated, corrupt or
    non-MNIST file is found here and not 15 s into the job; and the split and batch sizes against its size."""
    try:
        counts = {split: check_mnist(mnist_folder(root), split) for split in ("train", "t10k")}
    except IDXError as e:
        raise RecipeError(f"data.root={root!r}: {e}") from None
    if recipe.__fn_or_cls__ is not api.train:
        return
    try:
        _, n_val = split_sizes(counts["train"], _get(recipe, "data.val_size"))
    except ValueError as e:
        raise RecipeError(str(e)) from None
    micro = _get(recipe, "data.micro_batch_size")
    if micro and micro * ranks > n_val:
        raise RecipeError(
            f"data.micro_batch_size={micro} × {ranks} rank(s) is more than the {n_val} validation digits: no "
            "validation batch, so no val_loss and no checkpoint (lower it, or raise data.val_size)"
        )


def check_writable(log_dir: Path, what: str) -> None:
    """A local run folder's parent: writable where it exists, else where it would be created (its nearest existing
    folder), probed with a temporary file that is removed at once — a check creates nothing."""
    existing = log_dir.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a directory")
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as e:
        raise RecipeError(
            f"{what}={str(log_dir)!r} is not writable (no file can be made in {existing}: "
            f"{e.strerror or type(e).__name__})"
        ) from None


def job_accelerator(recipe: fdl.Buildable, executor_gpus) -> str:
    """Where the job will train, as the node will decide it: ``auto`` is a GPU where the job gets one."""
    accelerator = _get(recipe, "trainer.accelerator", "auto")
    if accelerator != "auto":
        return accelerator
    gpus = executor_gpus if executor_gpus is not None else (1 if _this_machine_has_gpus() else 0)
    return "gpu" if gpus else "cpu"


def check_run_folder(recipe: fdl.Buildable, ranks: tuple[int, int] = (1, 1), executor_gpus=None) -> None:
    """A training recipe whose run folder holds a run must be able to continue it (``run_record``): below
    ``max_steps``, with the same engine, hardware, precision and batch sizes, and a checkpoint that fits."""
    if recipe.__fn_or_cls__ is not api.train or _get(recipe, "log") is None:
        return
    run_dir = Path(_get(recipe, "log.log_dir", defaults.LOG_DIR)) / _get(recipe, "log.name", "")
    if run_dirs.held_by_a_live_run(run_dir):  # the job will write NAME-N: a new run, nothing of this one to continue
        return
    accelerator = job_accelerator(recipe, executor_gpus)
    micro = _get(recipe, "data.micro_batch_size", defaults.MICRO_BATCH_SIZE)
    facts = {
        "engine": _get(recipe, "trainer.loop", engines.DEFAULT),
        "accelerator": accelerator,
        "micro_batch_size": micro,
        "global_batch_size": constraints.global_batch_size(
            micro, _get(recipe, "data.global_batch_size"), ranks[0] * ranks[1]
        ),
        "precision": constraints.resolve_precision(_get(recipe, "trainer.precision"), accelerator),
    }
    step = run_record.check_continuation(  # a RunError: the run, its state and what to do
        run_dir, facts, _get(recipe, "trainer.max_steps"), _get(recipe, "resume.resume_if_exists", True)
    )
    if step is not None:
        check_checkpoint_fits(recipe, last_checkpoint(run_dir), f"the run being resumed ({run_dir})", resuming=True)


def _this_machine_has_gpus() -> bool:
    return Path("/dev/nvidiactl").exists() or shutil.which("nvidia-smi") is not None and Path("/dev/nvidia0").exists()


def check_checkpoint_fits(recipe: fdl.Buildable, checkpoint: Path, what: str, resuming: bool) -> None:
    """The weights the recipe takes from ``checkpoint`` are there, in the recipe's sizes (read from the context that
    NeMo saves beside it; a checkpoint without one is left for the job to judge)."""
    found = checkpoint_model(checkpoint)
    if found is None:
        return
    config, hidden = found
    task = _get(recipe, "model.task", inspect.signature(builders.model_config).parameters["task"].default)
    want_hidden = _get(recipe, "model.hidden_size", defaults.HIDDEN_SIZE)
    if hidden != want_hidden:
        raise RecipeError(
            f"{what} holds a model with hidden_size={hidden}, but model.hidden_size={want_hidden} "
            f"(set model.hidden_size={hidden}{'' if resuming else ', or start from another checkpoint'})"
        )
    spec = TASKS.get(task)
    if resuming and spec is not None and config != spec.config:
        raise RecipeError(f"{what} holds a {config} model, but model.task={task} (a {spec.config})")
    heads = spec.heads if spec is not None else set()
    skipped = _get(recipe, "model.initial_ckpt_skip_keys_with_these_prefixes")
    if recipe.__fn_or_cls__ is api.predict:
        skipped = []  # prediction takes every weight from the checkpoint
    elif skipped is None:
        skipped = list(spec.default_skip) if spec is not None else []  # the task's default: a fresh classifier
    missing = sorted(h for h in heads - CONFIG_HEADS.get(config, heads) if not any(h.startswith(p) for p in skipped))
    if missing:
        raise RecipeError(
            f"{what} holds a {config} model without {' or '.join(missing)}, which model.task={task} takes from it"
        )
