"""Reading a checkpoint's model weights, in both formats this package writes, without a process group.

- GPU (``MegatronStrategy``, the megatron engine): a directory ``NAME/`` holding ``weights/`` (Megatron's
  ``torch_dist`` format) and ``context/``.
- CPU (a plain Lightning strategy, the megatron engine on CPU): the file ``NAME.ckpt`` beside a ``NAME/`` folder that
  holds only ``context/``.

Either can start a finetune or a prediction on either kind of machine. Torch only (no NeMo, no megatron-core): the
report reads checkpoints with it too.
"""

from pathlib import Path

import torch
from torch import nn

from megatron_mnist.checkpoint_paths import CheckpointError, resolve_checkpoint


def _strip_module_prefixes(key: str) -> str:
    while key.startswith("module."):
        key = key[len("module.") :]
    return key


def load_model_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The model's weights in a checkpoint, keyed as in ``MNISTModel.state_dict()`` (no ``module.`` prefix)."""
    ckpt = resolve_checkpoint(path)
    if ckpt.is_file():
        try:
            state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
        except Exception as e:  # a truncated file, or a .ckpt that Lightning did not write
            raise CheckpointError(f"cannot read checkpoint {ckpt}: {e}") from e
    else:
        from torch.distributed.checkpoint import FileSystemReader
        from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
        from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

        # Read in this process alone (no_dist), also where a process group exists: rank 0 drawing the report after a
        # multi-rank prediction must not start a collective that the other ranks never join (it hung there). All
        # keys: asking for a subset needs planner data that Megatron's torch_dist metadata does not carry; the
        # optimizer's tensors come along and are dropped below (small for this model). As torch's dcp_to_torch_save.
        state = {}
        _load_state_dict(
            state, storage_reader=FileSystemReader(str(ckpt)), planner=_EmptyStateDictLoadPlanner(), no_dist=True
        )
    return {
        _strip_module_prefixes(k): v
        for k, v in state.items()
        if k.startswith("module.") and isinstance(v, torch.Tensor)
    }


def load_initial_weights(model: nn.Module, path: str | Path, skip_prefixes: list[str]) -> None:
    """Start ``model`` from a checkpoint's weights, leaving the parameters under ``skip_prefixes`` as initialised.

    The checkpoint's extra weights (a head this model dropped) are ignored; a parameter the model needs and the
    checkpoint lacks, or one of another shape, is an error naming it.
    """
    weights = load_model_weights(path)
    own = model.state_dict()
    to_load = {k: v for k, v in own.items() if not any(k.startswith(prefix) for prefix in skip_prefixes)}
    missing = sorted(k for k in to_load if k not in weights)
    if missing:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model: it lacks {', '.join(missing)} (add their "
            f"prefix to initial_ckpt_skip_keys_with_these_prefixes to start them fresh)"
        )
    wrong = [
        f"{k} {tuple(weights[k].shape)} != {tuple(v.shape)}" for k, v in to_load.items() if weights[k].shape != v.shape
    ]
    if wrong:
        raise CheckpointError(f"checkpoint {path} does not fit this model: shapes differ: {'; '.join(wrong)}")
    model.load_state_dict({k: weights[k].to(v.dtype) for k, v in to_load.items()}, strict=False)
    fresh = sorted(k for k in own if k not in to_load)
    # NeMo's resume logs "Training from scratch" when the run has no checkpoint of its own; say what was loaded
    print(
        f"initial weights: {len(to_load)} tensors from {path}"
        + (f"; started fresh: {', '.join(fresh)}" if fresh else ""),
        flush=True,
    )
