import math

import pytest
import torch

from megatron_mnist.job.strategies import apply_reduction
from megatron_mnist.model.losses import (
    ClassifierLossReduction,
    MSELossReduction,
    MSEPlusClassifierLossReduction,
    PassthroughLossReduction,
)


@pytest.fixture
def batch_and_out():
    data = torch.zeros(2, 1, 28, 28)
    data[0, 0, 0, 0] = 1.0
    x_hat = torch.zeros(2, 784)
    x_hat[1, 5] = 2.0
    logits = torch.tensor([[0.0, math.log(3.0)] + [-1e9] * 8, [0.0] * 10])
    batch = {"data": data, "label": torch.tensor([1, 4]), "idx": torch.tensor([10, 11])}
    return batch, {"x_hat": x_hat, "digit_logits": logits, "z": torch.zeros(2, 3)}


def test_mse_by_hand(batch_and_out):
    batch, out = batch_and_out
    loss, reduced = apply_reduction(MSELossReduction(), batch, out)
    # two wrong pixels out of 2 × 784: (1 - 0)² + (0 - 2)² = 5
    assert loss.item() == pytest.approx(5 / (2 * 784))
    assert reduced == {"avg": loss}


def test_cross_entropy_by_hand(batch_and_out):
    batch, out = batch_and_out
    loss, reduced = apply_reduction(ClassifierLossReduction(), batch, out)
    # item 0: p(label 1) = 3 / (1 + 3) → -log(0.75); item 1: uniform over 10 → log(10)
    assert loss.item() == pytest.approx((-math.log(0.75) + math.log(10)) / 2, rel=1e-6)
    assert reduced["avg"] == loss


def test_both_is_the_sum(batch_and_out):
    batch, out = batch_and_out
    both, _ = apply_reduction(MSEPlusClassifierLossReduction(), batch, out)
    expected = 5 / (2 * 784) + (-math.log(0.75) + math.log(10)) / 2
    assert both.item() == pytest.approx(expected, rel=1e-6)


def test_reduce_is_the_mean_of_the_micro_batch_averages():
    reduction = MSELossReduction()
    assert reduction.reduce([{"avg": torch.tensor(1.0)}, {"avg": torch.tensor(4.0)}]).item() == 2.5


def test_passthrough_keeps_outputs_label_and_idx(batch_and_out):
    batch, out = batch_and_out
    reduction = PassthroughLossReduction()
    _, first = apply_reduction(reduction, batch, out)
    merged = reduction.reduce([first, first])
    assert merged["digit_logits"].shape == (4, 10) and merged["idx"].tolist() == [10, 11, 10, 11]


@pytest.mark.parametrize("reduction", [MSELossReduction, ClassifierLossReduction, MSEPlusClassifierLossReduction])
def test_the_report_survives_megatrons_in_place_scaling_of_the_loss(batch_and_out, reduction):
    # Megatron's forward_step divides the returned loss in place by the number of micro-batches
    batch, out = batch_and_out
    loss, reduced = apply_reduction(reduction(), batch, out)
    before = loss.item()
    loss /= 2
    assert reduced["avg"].item() == before
    assert reduction().reduce([reduced, reduced]).item() == pytest.approx(before)
