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
from megatron_mnist.model.spec import CLASSIFIER, DECODER, TASKS
from megatron_mnist.model.weights import load_initial_weights


@dataclass
class MNISTConfig(TransformerConfig):
    """What every MNIST config shares. Subclasses choose the heads and the loss.

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

    has_decoder: ClassVar[bool]
    has_classifier: ClassVar[bool]
    loss_reduction_class: ClassVar[type[MegatronLossReduction]]

    def configure_model(self) -> MNISTModel:
        model = MNISTModel(self, decoder=self.has_decoder, classifier=self.has_classifier)
        if self.initial_ckpt_path:
            load_initial_weights(model, self.initial_ckpt_path, self.initial_ckpt_skip_keys_with_these_prefixes)
        return model

    def get_loss_reduction_class(self) -> type[MegatronLossReduction]:
        return self.loss_reduction_class


@dataclass
class PretrainConfig(MNISTConfig):
    """The autoencoder: trunk + decoder, MSE reconstruction loss."""

    has_decoder: ClassVar[bool] = DECODER in TASKS["pretrain"].heads
    has_classifier: ClassVar[bool] = CLASSIFIER in TASKS["pretrain"].heads
    loss_reduction_class: ClassVar[type] = losses.MSELossReduction


@dataclass
class FinetuneConfig(MNISTConfig):
    """The classifier: trunk + digit_classifier (the decoder dropped), cross-entropy loss."""

    has_decoder: ClassVar[bool] = DECODER in TASKS["finetune"].heads
    has_classifier: ClassVar[bool] = CLASSIFIER in TASKS["finetune"].heads
    loss_reduction_class: ClassVar[type] = losses.ClassifierLossReduction
    initial_ckpt_skip_keys_with_these_prefixes: list[str] = field(
        default_factory=lambda: list(TASKS["finetune"].default_skip)
    )


@dataclass
class FinetuneBothConfig(MNISTConfig):
    """Trunk + decoder + digit_classifier, trained on MSE + cross-entropy."""

    has_decoder: ClassVar[bool] = DECODER in TASKS["finetune_both"].heads
    has_classifier: ClassVar[bool] = CLASSIFIER in TASKS["finetune_both"].heads
    loss_reduction_class: ClassVar[type] = losses.MSEPlusClassifierLossReduction
    initial_ckpt_skip_keys_with_these_prefixes: list[str] = field(
        default_factory=lambda: list(TASKS["finetune_both"].default_skip)
    )


# each task's config class, by the name model/spec.py gives it
CONFIGS: dict[str, type[MNISTConfig]] = {task: globals()[spec.config] for task, spec in TASKS.items()}
