"""Finding a checkpoint from any path a user gives, without importing torch (the launcher checks paths with it
before submitting; ``checkpoint`` reads the weights on the node)."""

from pathlib import Path

from megatron_mnist.errors import CheckpointError


def _latest_last_checkpoint(checkpoints_dir: Path) -> Path | None:
    # a CPU checkpoint's -last.ckpt file, or a Megatron -last folder with weights (not a bare context folder); not
    # one whose save was cut short (NeMo's and the megatron engine's NAME-unfinished mark beside it)
    candidates = [
        p
        for p in checkpoints_dir.iterdir()
        if (p.name.endswith("-last.ckpt") or (p.name.endswith("-last") and (p / "weights").is_dir()))
        and not (checkpoints_dir / f"{p.name.removesuffix('.ckpt')}-unfinished").exists()
    ]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def resolve_checkpoint(path: str | Path) -> Path:
    """The file or folder that holds a checkpoint's weights, from any path a user is likely to give.

    Accepted: a Lightning ``.ckpt`` file; a Megatron checkpoint folder (with ``weights/``) or its ``weights/``;
    a CPU checkpoint's ``NAME/`` context folder (its ``NAME.ckpt`` is used); a run directory or its
    ``checkpoints/`` folder (the newest ``*-last`` checkpoint in it is used).
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    if p.is_file():
        return p
    if (p / "weights").is_dir():
        return p / "weights"
    if (p / ".metadata").is_file():
        return p
    if p.with_name(p.name + ".ckpt").is_file():
        return p.with_name(p.name + ".ckpt")
    checkpoints_dir = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    last = _latest_last_checkpoint(checkpoints_dir)
    if last is not None and last != p:
        return resolve_checkpoint(last)
    raise CheckpointError(
        f"{p} is not a checkpoint: expected a .ckpt file, a Megatron checkpoint folder with "
        f"weights/, or a run directory with checkpoints/*-last"
    )


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """A run directory's last checkpoint, resolved (None when it has none), by :func:`resolve_checkpoint`'s rule."""
    try:
        return resolve_checkpoint(Path(run_dir) / "checkpoints")
    except CheckpointError:
        return None


def context_dir(checkpoint: Path) -> Path:
    """The NeMo context folder saved beside a resolved checkpoint (beside ``weights/``, or in ``NAME.ckpt``'s
    ``NAME/``)."""
    return (checkpoint.parent if checkpoint.name == "weights" else checkpoint.with_suffix("")) / "context"


def checkpoint_model(checkpoint: Path) -> tuple[str, int] | None:
    """(model config class name, hidden_size) from the NeMo context saved beside a resolved checkpoint; None when
    it has no readable context (a bare ``.ckpt`` from elsewhere)."""
    import yaml

    context = context_dir(checkpoint)
    try:
        config = yaml.safe_load((context / "model.yaml").read_text())["config"]
        return config["_target_"].rsplit(".", 1)[-1], int(config["hidden_size"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return None


def write_context(checkpoint_dir: Path, config, **facts) -> None:
    """The context the megatron engine saves beside a checkpoint (``NAME/context/model.yaml``): what
    :func:`checkpoint_model` and the launcher's checks read of NeMo's own — the model config's class and sizes —
    and the ``facts`` given (the engine)."""
    import yaml

    context = Path(checkpoint_dir) / "context"
    context.mkdir(parents=True, exist_ok=True)
    cls = type(config)
    model = {
        "config": {
            "_target_": f"{cls.__module__}.{cls.__qualname__}",
            "hidden_size": int(config.hidden_size),
            "embedding_dim": int(config.embedding_dim),
        },
        **facts,
    }
    (context / "model.yaml").write_text(yaml.safe_dump(model, sort_keys=False))
