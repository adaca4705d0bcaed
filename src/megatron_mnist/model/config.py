"""Model configs: megatron-core ``TransformerConfig``s (NeMo's strategy reads fields such as
``calculate_per_token_loss`` from them) that know how to build their model and its loss.

The transformer fields this model does not use are set small; ``hidden_size`` is the width of the MLP layers.
"""

from dataclasses import dataclass, field
from typing import ClassVar

from megatron.core.transformer import TransformerConfig
from nemo.lightning.megatron_parallel import MegatronLossReduction

from megatron_mnist import defaults
from megatron_mnist.model import losses
from megatron_mnist.model.modules import MNISTModel
from megatron_mnist.model.spec import TASKS
from megatron_mnist.model.weights import load_initial_weights


def default_skip(task: str):
    """The task's ``default_skip`` (model/spec.py) as a dataclass field's default."""
    return field(default_factory=lambda: list(TASKS[task].default_skip))


@dataclass
class MNISTConfig(TransformerConfig):
    """What every MNIST config shares. A subclass names its task; the task's entry in ``model/spec.py`` says which
    heads the model has, which loss trains it and which parameters a finetune starts fresh.

    Args:
        initial_ckpt_path: a checkpoint whose weights start this model (finetuning); None = fresh weights.
        initial_ckpt_skip_keys_with_these_prefixes: parameter prefixes not taken from that checkpoint (a new head,
            say); parameters the checkpoint has and this model lacks (a dropped decoder) are ignored.
    """

    hidden_size: int = defaults.HIDDEN_SIZE
    num_attention_heads: int = 1
    num_layers: int = 1
    embedding_dim: int = 3
    initial_ckpt_path: str | None = None
    initial_ckpt_skip_keys_with_these_prefixes: list[str] = field(default_factory=list)

    task: ClassVar[str]

    def configure_model(self) -> MNISTModel:
        model = MNISTModel(self, heads=TASKS[self.task].heads)
        if self.initial_ckpt_path:
            load_initial_weights(model, self.initial_ckpt_path, self.initial_ckpt_skip_keys_with_these_prefixes)
        return model

    def get_loss_reduction_class(self) -> type[MegatronLossReduction]:
        return getattr(losses, TASKS[self.task].loss)


@dataclass
class PretrainConfig(MNISTConfig):
    """The autoencoder: trunk + decoder, MSE reconstruction loss."""

    task: ClassVar[str] = "pretrain"


@dataclass
class FinetuneConfig(MNISTConfig):
    """The classifier: trunk + digit_classifier (the decoder dropped), cross-entropy loss."""

    task: ClassVar[str] = "finetune"
    initial_ckpt_skip_keys_with_these_prefixes: list[str] = default_skip("finetune")


@dataclass
class FinetuneBothConfig(MNISTConfig):
    """Trunk + decoder + digit_classifier, trained on MSE + cross-entropy."""

    task: ClassVar[str] = "finetune_both"
    initial_ckpt_skip_keys_with_these_prefixes: list[str] = default_skip("finetune_both")


# each task's config class, by the name model/spec.py gives it
CONFIGS: dict[str, type[MNISTConfig]] = {task: globals()[spec.config] for task, spec in TASKS.items()}
assert all(config.task == task for task, config in CONFIGS.items()), "a config class names another task"
