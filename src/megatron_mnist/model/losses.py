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


class _MeanOfMicroBatches(MegatronLossReduction):
    def reduce(self, losses_reduced_per_micro_batch: Sequence[SameSizeLossDict]) -> Tensor:
        return torch.stack([loss["avg"] for loss in losses_reduced_per_micro_batch]).mean()


class MSELossReduction(_MeanOfMicroBatches):
    """Reconstruction: MSE between ``x_hat`` and the flattened image."""

    def forward(self, batch: MnistItem, forward_out: dict[str, Tensor]) -> tuple[Tensor, SameSizeLossDict]:
        x_hat = forward_out["x_hat"]
        target = batch["data"].reshape(x_hat.shape[0], -1).to(x_hat.dtype)
        loss = F.mse_loss(x_hat, target)
        return loss, {"avg": loss}


class ClassifierLossReduction(_MeanOfMicroBatches):
    """Digit classification: cross-entropy of ``digit_logits`` against ``label``."""

    def forward(self, batch: MnistItem, forward_out: dict[str, Tensor]) -> tuple[Tensor, SameSizeLossDict]:
        loss = F.cross_entropy(forward_out["digit_logits"].float(), batch["label"])
        return loss, {"avg": loss}


class MSEPlusClassifierLossReduction(_MeanOfMicroBatches):
    """Both objectives at once: MSE + cross-entropy."""

    def forward(self, batch: MnistItem, forward_out: dict[str, Tensor]) -> tuple[Tensor, SameSizeLossDict]:
        mse, _ = MSELossReduction().forward(batch, forward_out)
        ce, _ = ClassifierLossReduction().forward(batch, forward_out)
        loss = mse + ce
        return loss, {"avg": loss}


class PassthroughLossReduction(MegatronLossReduction):
    """For prediction under Megatron's schedule: no loss, the forward outputs concatenated over micro-batches."""

    def forward(self, batch: MnistItem, forward_out: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        out = dict(forward_out, label=batch["label"], idx=batch["idx"])
        return torch.zeros((), device=forward_out["z"].device), out

    def reduce(self, forward_outs: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
        return {key: torch.cat([out[key] for out in forward_outs]) for key in forward_outs[0]}
