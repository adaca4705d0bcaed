"""megatron-mnist: NeMo-Run recipes and a launcher for a Megatron MNIST autoencoder / classifier.

Importing this package is cheap on purpose (no torch, NeMo or Megatron): recipes and the launcher compose
configs from it, and only the node that runs a job imports the training stack.
"""

__version__ = "0.1.0"
