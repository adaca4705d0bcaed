"""Resuming Megatron's distributed Adam without Apex/TE: each parameter keeps its own ``step`` (CPU, torch's AdamW as
megatron-core falls back to it; the distributed optimizer itself needs CUDA and is covered by the GPU suite)."""

import copy

import torch

from megatron_mnist.job.megatron_optim import own_step_per_parameter


def _adamw(params):
    return torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)


def _step(opt, params, seed):
    torch.manual_seed(seed)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()


def _loaded_as_megatron_loads(trained, params):
    """A fresh AdamW loaded from ``trained``'s state the way megatron-core 0.15's DistributedOptimizer.load_state_dict
    loads it without Apex/TE: the per-parameter tensors, and one ``step`` tensor given to every parameter."""
    saved = copy.deepcopy(trained.state_dict())
    shared = torch.tensor(float(saved["state"][0]["step"]))
    for state in saved["state"].values():
        state["step"] = shared  # distrib_optimizer.py: `for s in state_dict_state.values(): s["step"] = step`
    fresh = _adamw(params)
    fresh.load_state_dict(saved)
    return fresh


def test_a_shared_step_runs_the_bias_correction_n_times_too_fast_and_own_steps_resume_exactly():
    torch.manual_seed(0)
    straight = [torch.randn(4, 3) for _ in range(8)]
    straight_opt = _adamw(straight)
    for seed in range(5):
        _step(straight_opt, straight, seed)
    resumed = [p.detach().clone() for p in straight]

    # the bug, as it was: one update moves the shared counter by the number of parameters
    buggy = _loaded_as_megatron_loads(straight_opt, resumed)
    assert len({id(s["step"]) for s in buggy.state.values()}) == 1
    _step(buggy, resumed, 99)
    assert float(next(iter(buggy.state.values()))["step"]) == 5 + 8

    # the fix: after loading, each parameter has its own step, and the run continues bit for bit
    resumed = [p.detach().clone() for p in straight]
    fixed = _loaded_as_megatron_loads(straight_opt, resumed)
    own_step_per_parameter(fixed)
    assert len({id(s["step"]) for s in fixed.state.values()}) == 8
    for seed in range(5, 10):
        _step(straight_opt, straight, seed)
        _step(fixed, resumed, seed)
    assert all(torch.equal(a, b) for a, b in zip(straight, resumed, strict=True))
    assert all(float(s["step"]) == 10 for s in fixed.state.values())
