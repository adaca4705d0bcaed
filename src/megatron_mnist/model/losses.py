"""Loss reductions in Megatron's contract: ``forward`` → ``(loss, {"avg": loss})``, ``reduce`` → mean of the avgs."""

from collections.abc import Sequence
from typing import TypedDict

import torch
from nemo.lightning.megatron_parallel import MegatronLossReduction
from torch import Tensor
from torch.nn import functional as F

from megatron_mnist.data.dataset import MnistItem


class SameSizeLossDict(TypedDict):
    """The reduction of a micro-batch whose micro-batches all have the same size: a plain average is exact."""

    avg: Tensor


def data_parallel_mean(loss: Tensor) -> Tensor:
    """The mean of ``loss`` over Megatron's data-parallel ranks (each computed it on its own shard).

    What NeMo's own reductions report. Without it each rank logs its shard's val_loss, and the checkpoint name,
    which holds val_loss, differs between ranks: their shards of one checkpoint land in two folders (seen on 2
    H100s). Under the CPU strategies Megatron's parallel state is not set up, and Lightning's ``sync_dist`` does this.
    """
    from megatron.core import parallel_state

    if not (torch.distributed.is_initialized() and parallel_state.model_parallel_is_initialized()):
        return loss
    group = parallel_state.get_data_parallel_group()
    size = torch.distributed.get_world_size(group)
    if size == 1:
        return loss
    total = loss.detach().clone()
    torch.distributed.all_reduce(total, group=group)
    return total / size


def reported(loss: Tensor) -> SameSizeLossDict:
    """The micro-batch's loss as reported, a copy: Megatron's schedule divides the returned loss in place by the
    number of micro-batches (for the backward pass), which would halve a report that shares its tensor (seen on an
    H100: one GPU with 2 micro-batches logged half the loss of 2 GPUs with one each)."""
    return {"avg": loss.detach().clone()}


class _MeanOfMicroBatches(MegatronLossReduction):
    def reduce(self, losses_reduced_per_micro_batch: Sequence[SameSizeLossDict]) -> Tensor:
        return data_parallel_mean(torch.stack([loss["avg"] for loss in losses_reduced_per_micro_batch]).mean())


class MSELossReduction(_MeanOfMicroBatches):
    """Reconstruction: MSE between ``x_hat`` and the flattened image."""

    def forward(self, batch: MnistItem, forward_out: dict[str, Tensor]) -> tuple[Tensor, SameSizeLossDict]:
        x_hat = forward_out["x_hat"]
        target = batch["data"].reshape(x_hat.shape[0], -1).to(x_hat.dtype)
        loss = F.mse_loss(x_hat, target)
        return loss, reported(loss)


class ClassifierLossReduction(_MeanOfMicroBatches):
    """Digit classification: cross-entropy of ``digit_logits`` against ``label``."""

    def forward(self, batch: MnistItem, forward_out: dict[str, Tensor]) -> tuple[Tensor, SameSizeLossDict]:
        loss = F.cross_entropy(forward_out["digit_logits"].float(), batch["label"])
        return loss, reported(loss)


class MSEPlusClassifierLossReduction(_MeanOfMicroBatches):
    """Both objectives at once: MSE + cross-entropy."""

    def forward(self, batch: MnistItem, forward_out: dict[str, Tensor]) -> tuple[Tensor, SameSizeLossDict]:
        mse, _ = MSELossReduction().forward(batch, forward_out)
        ce, _ = ClassifierLossReduction().forward(batch, forward_out)
        loss = mse + ce
        return loss, reported(loss)


class PassthroughLossReduction(MegatronLossReduction):
    """For prediction under Megatron's schedule: no loss, the forward outputs concatenated over micro-batches."""

    def forward(self, batch: MnistItem, forward_out: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        out = dict(forward_out, label=batch["label"], idx=batch["idx"])
        return torch.zeros((), device=forward_out["z"].device), out

    def reduce(self, forward_outs: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
        return {key: torch.cat([out[key] for out in forward_outs]) for key in forward_outs[0]}
