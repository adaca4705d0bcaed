"""Megatron's distributed Adam, made resumable where neither Apex nor Transformer Engine is installed.

Without them megatron-core falls back to torch's AdamW, whose per-parameter ``step`` appears only after the first
update. Loading a checkpoint builds the optimizer's state template first (``init_state_fn``, then
``state_dict()``), and ``state_dict()`` reads that ``step`` from every parameter: a fresh optimizer fails there
(``assert len(steps) == 1``), before ``init_state_fn`` runs. So the state is seeded as soon as the optimizer
exists — zeros and ``step`` 0, exactly what torch's AdamW would create at its first update.

It also keeps NeMo's per-step logging to what is measured and written (see the methods' comments).

Loading then restores ``step`` from the param groups and copies the checkpoint's per-parameter tensors (which
never include ``step``) into every state key, ``step`` included (``KeyError: 'step'``): the copy is made to skip it.

And it restores that ``step`` as **one** tensor shared by every parameter (``s["step"] = step`` in
``DistributedOptimizer.load_state_dict``); torch's ``Optimizer.load_state_dict`` keeps a non-capturable ``step`` as
it is, and torch's Adam adds 1 to each parameter's ``step`` per update: the shared one then grew by the number of
parameters per step, and every resumed GPU run's bias correction ran that many times too fast (its losses drifted
from the run it continued). After loading, each parameter gets its own copy (:func:`own_step_per_parameter`).
"""

import torch
from megatron.core.optimizer import distrib_optimizer
from nemo.lightning import MegatronOptimizerModule


def _with_step(init_state_fn):
    def init_state(opt, config=None):
        if init_state_fn is not None:
            init_state_fn(opt, config)
        for group in opt.param_groups:
            # torch's capturable Adam (the megatron engine's) keeps the step on the parameter's device
            device = None if group.get("capturable") else "cpu"
            for param in group["params"]:
                opt.state[param].setdefault("step", torch.zeros((), dtype=torch.float32, device=device or param.device))

    return init_state


def _copy_states_except_step(megatron_optimizer):
    copy_states = megatron_optimizer._set_main_param_and_optimizer_states

    def set_states(model_param, tensors):
        group_index, group_order = megatron_optimizer.model_param_group_index_map[model_param]
        main_param = megatron_optimizer.optimizer.param_groups[group_index]["params"][group_order]
        state = megatron_optimizer.optimizer.state[main_param]
        step = state.pop("step", None)
        try:
            copy_states(model_param, tensors)
        finally:
            if step is not None:
                state["step"] = step

    return set_states


def own_step_per_parameter(torch_optimizer) -> None:
    """Give each parameter's state its own ``step`` tensor where several share one (same value, new storage)."""
    seen = set()
    for state in torch_optimizer.state.values():
        step = state.get("step")
        if isinstance(step, torch.Tensor):
            if id(step) in seen:
                state["step"] = step.clone()
            seen.add(id(state["step"]))


def _unshare_steps_after_loading(megatron_optimizer):
    load_state_dict = megatron_optimizer.load_state_dict

    def load(state_dict):
        load_state_dict(state_dict)
        own_step_per_parameter(megatron_optimizer.optimizer)

    return load


def _report_only_measured(step, config):
    """Megatron's step returns grad_norm 0.0 when it does not clip and num_zeros 0 when it does not count them; NeMo
    logs whatever is not None, so those zeros would reach the logs every step as if they were measurements."""

    def step_(closure=None, **kwargs):
        loss, grad_norm, num_zeros = step(closure=closure, **kwargs)
        return (
            loss,
            grad_norm if config.clip_grad > 0 else None,
            num_zeros if config.log_num_zeros_in_grad else None,
        )

    return step_


def _without_grad_norm(get_grad_norm, config):
    """megatron-core's ChainedOptimizer computes the gradient norm every step, clipping or not: without Apex or
    Transformer Engine a norm per parameter, an all-reduce and a blocking read. Without clipping nothing uses it."""

    def get_grad_norm_():
        return get_grad_norm() if config.clip_grad > 0 or not MegatronAdamModule.skip_unused_grad_norm else None

    return get_grad_norm_


def optimizer_config(optim, precision: str):
    """Megatron's ``OptimizerConfig`` for the recipe's Adam (``builders.Adam``) in ``precision``: the distributed
    optimizer with fp32 main weights (bf16-mixed, 16-mixed with dynamic loss scaling) or fp32 throughout (32)."""
    from megatron.core.optimizer import OptimizerConfig

    return OptimizerConfig(
        optimizer="adam",
        lr=optim.lr,
        weight_decay=optim.weight_decay,
        adam_beta1=optim.adam_beta1,
        adam_beta2=optim.adam_beta2,
        adam_eps=optim.adam_eps,
        bf16=precision == "bf16-mixed",
        fp16=precision == "16-mixed",
        use_distributed_optimizer=True,
        # No clipping, as torch's Adam on the CPU path (Megatron's default clips at 1.0, which also costs a
        # grad-norm reduction and a log call every step).
        clip_grad=0.0,
    )


def make_resumable(megatron_optimizer, config) -> None:
    """The fixes above, on a ``get_megatron_optimizer`` result (a ChainedOptimizer or one optimizer): no unused
    gradient norm; and where neither Apex nor TE is installed, ``step`` seeded at once, kept out of the state copy,
    and each parameter's own after loading."""
    megatron_optimizer.get_grad_norm = _without_grad_norm(megatron_optimizer.get_grad_norm, config)
    if distrib_optimizer.HAVE_APEX_OR_TE:
        return
    for optimizer in getattr(megatron_optimizer, "chained_optimizers", [megatron_optimizer]):
        optimizer.init_state_fn = _with_step(optimizer.init_state_fn)
        optimizer.init_state_fn(optimizer.optimizer, optimizer.config)
        optimizer._set_main_param_and_optimizer_states = _copy_states_except_step(optimizer)
        optimizer.load_state_dict = _unshare_steps_after_loading(optimizer)


class MegatronAdamModule(MegatronOptimizerModule):
    """NeMo's Megatron optimizer module for the Lightning engine, with :func:`make_resumable` applied."""

    skip_unused_grad_norm = True  # benchmarks/gpu_throughput.py turns it off to measure what it costs

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # NeMo logs the learning rate before every step; Lightning writes logs every log_every_n_steps, and a
        # `log` call costs as much Python as a quarter of this model's step. Log it when it will be written.
        if trainer._logger_connector.should_update_logs:
            super().on_train_batch_start(trainer, pl_module, batch, batch_idx)

    def optimizers(self, model):
        optimizers = super().optimizers(model)
        for optimizer in optimizers:
            optimizer.step = _report_only_measured(optimizer.step, self.config)
            make_resumable(getattr(optimizer, "mcore_optimizer", optimizer), self.config)
        return optimizers
