"""The layers of the seed's networks, torch only: the trunk 784→H→ReLU→E (E = 3), the decoder E→H→ReLU→784 and the
digit classifier E→10. ``modules.MNISTModel`` (a Megatron module) is made of them; the report rebuilds digits with
them without importing megatron-core."""

from torch import nn

IMAGE_PIXELS = 28 * 28
NUM_DIGITS = 10


def trunk(hidden: int, embedding: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(IMAGE_PIXELS, hidden), nn.ReLU(), nn.Linear(hidden, embedding))


def image_decoder(hidden: int, embedding: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(embedding, hidden), nn.ReLU(), nn.Linear(hidden, IMAGE_PIXELS))


def digit_classifier(embedding: int) -> nn.Linear:
    return nn.Linear(embedding, NUM_DIGITS)
