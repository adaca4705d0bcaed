"""The MNIST autoencoder / classifier: Megatron modules, their configs and losses."""
