"""Megatron's distributed Adam, made resumable where neither Apex nor Transformer Engine is installed.

Without them megatron-core falls back to torch's AdamW, whose per-parameter ``step`` appears only after the first
update. Loading a checkpoint builds the optimizer's state template first (``init_state_fn``, then
``state_dict()``), and ``state_dict()`` reads that ``step`` from every parameter: a fresh optimizer fails there
(``assert len(steps) == 1``). Seeding ``step`` in ``init_state_fn`` is what the Apex/TE path does implicitly.
"""

import torch
from megatron.core.optimizer import distrib_optimizer
from nemo.lightning import MegatronOptimizerModule


def _with_step(init_state_fn):
    def init_state(opt, config=None):
        if init_state_fn is not None:
            init_state_fn(opt, config)
        for group in opt.param_groups:
            for param in group["params"]:
                opt.state[param].setdefault("step", torch.zeros((), dtype=torch.float32))

    return init_state


class MegatronAdamModule(MegatronOptimizerModule):
    def optimizers(self, model):
        optimizers = super().optimizers(model)
        if not distrib_optimizer.HAVE_APEX_OR_TE:
            for optimizer in optimizers:
                inner = getattr(optimizer, "mcore_optimizer", optimizer)
                for megatron_optimizer in getattr(inner, "chained_optimizers", [inner]):
                    megatron_optimizer.init_state_fn = _with_step(megatron_optimizer.init_state_fn)
        return optimizers
