"""The megatron engine's logged-loss readback (job/megatron_engine.py's LossReadback): the values and their order
are what a float() on each log step gives. Its device path (no host wait) is tested in the GPU suite."""

import torch

from megatron_mnist.job.megatron_engine import LossReadback


def test_cpu_losses_come_back_at_once_in_order_and_exact():
    readback = LossReadback(torch.device("cpu"))
    losses = [torch.tensor(v, dtype=torch.float32) for v in (0.5, 0.123456789, 3e-8)]
    for step, loss in zip((4, 9, 14), losses, strict=True):
        readback.push(step, loss)
    assert readback.ready() == [(4, float(losses[0])), (9, float(losses[1])), (14, float(losses[2]))]
    assert readback.ready() == [] and readback.drain() == []


def test_a_bf16_loss_is_read_as_its_float32_value():
    readback = LossReadback(torch.device("cpu"))
    loss = torch.tensor(0.1, dtype=torch.bfloat16)
    readback.push(0, loss)
    assert readback.drain() == [(0, float(loss.float()))]
