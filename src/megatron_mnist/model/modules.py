"""The networks: a trunk 784→H→ReLU→3, an optional decoder 3→H→784 and an optional digit classifier 3→10."""

import torch
from megatron.core.transformer.enums import ModelType
from megatron.core.transformer.module import MegatronModule

from megatron_mnist.model import layers
from megatron_mnist.model.spec import CLASSIFIER, DECODER


class MNISTModel(MegatronModule):
    """The autoencoder trunk plus whichever heads the task needs.

    One class serves the tutorial's three models: pretraining (trunk + decoder), finetuning (trunk +
    ``digit_classifier``) and both. The attribute names are the checkpoint's key prefixes, which is what
    ``initial_ckpt_skip_keys_with_these_prefixes`` refers to (``image_decoder``, ``digit_classifier``).

    ``forward`` returns a dict: ``z`` [B, 3] always, ``x_hat`` [B, 784] with the decoder, ``digit_logits`` [B, 10]
    with the classifier.
    """

    def __init__(self, config, heads: frozenset[str]):
        """``heads``: the task's (``model/spec.py``'s ``TASKS``), beside the trunk every task has."""
        super().__init__(config)
        self.model_type = ModelType.encoder_or_decoder  # read by Megatron's schedules
        hidden, embedding = config.hidden_size, config.embedding_dim
        self.trunk = layers.trunk(hidden, embedding)
        # Not named `decoder`: Megatron's schedules take a model's `decoder` for a transformer block with `.layers`.
        self.image_decoder = layers.image_decoder(hidden, embedding) if DECODER in heads else None
        self.digit_classifier = layers.digit_classifier(embedding) if CLASSIFIER in heads else None

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.trunk(images.reshape(images.shape[0], -1))
        out = {"z": z}
        if self.image_decoder is not None:
            out["x_hat"] = self.image_decoder(z)
        if self.digit_classifier is not None:
            out["digit_logits"] = self.digit_classifier(z)
        return out

    def set_input_tensor(self, input_tensor) -> None:
        """Megatron's pipeline schedule calls this; with one stage there is nothing to receive."""
