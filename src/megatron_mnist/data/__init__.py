"""MNIST items, epoch-deterministic resampling and the Lightning data module."""
