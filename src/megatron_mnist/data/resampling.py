"""Epoch-deterministic access to datasets, as Megatron's samplers need: item ``i`` of epoch ``e`` is always the same.

Megatron's pretraining sampler walks a dataset once, in order, from ``consumed_samples``. To train for many epochs
with a fresh shuffle each, the dataset it walks is a :class:`MultiEpochDatasetResampler`: a long virtual dataset
whose index ``i`` maps to ``EpochIndex(epoch=i // n, idx=perm_epoch[i % n])``, the permutation drawn from
``seed + epoch``. Resuming at any ``consumed_samples`` therefore reproduces the exact batches.
"""

from collections.abc import Sized
from typing import NamedTuple, Protocol, TypeVar

import numpy as np
from torch.utils.data import Dataset

T = TypeVar("T", covariant=True)


class EpochIndex(NamedTuple):
    epoch: int
    idx: int


class MultiEpochDataset(Protocol[T]):
    def __getitem__(self, index: EpochIndex) -> T: ...

    def __len__(self) -> int: ...


class IdentityMultiEpochDatasetWrapper(Dataset):
    """Makes an int-indexed dataset accept an :class:`EpochIndex` (ignoring the epoch): its items never change."""

    def __init__(self, dataset: Sized):
        self.dataset = dataset

    def __getitem__(self, index: EpochIndex):
        return self.dataset[index.idx]

    def __getitems__(self, indices: list[EpochIndex]):
        return fetch_many(self.dataset, [index.idx for index in indices])

    def __len__(self) -> int:
        return len(self.dataset)


class MultiEpochDatasetResampler(Dataset):
    """An int-indexed view of ``num_samples`` items drawn epoch after epoch from a :class:`MultiEpochDataset`.

    Args:
        dataset: accepts ``EpochIndex``; its length is one epoch.
        num_samples: the virtual length (default: one epoch); more than one epoch cycles with a new order.
        shuffle: a fresh permutation per epoch (seeded by ``seed + epoch``) or the natural order.
        seed: the base seed.
    """

    def __init__(self, dataset: MultiEpochDataset, num_samples: int | None = None, shuffle: bool = True, seed: int = 0):
        self.dataset = dataset
        self.epoch_len = len(dataset)
        if self.epoch_len == 0:
            raise ValueError("cannot resample an empty dataset")
        self.num_samples = self.epoch_len if num_samples is None else int(num_samples)
        if self.num_samples < 0:
            raise ValueError(f"num_samples={num_samples} must be >= 0")
        self.shuffle = shuffle
        self.seed = seed
        self._cached_epoch: int | None = None
        self._cached_perm: np.ndarray | None = None

    def __len__(self) -> int:
        return self.num_samples

    def epoch_permutation(self, epoch: int) -> np.ndarray:
        if self._cached_epoch != epoch:
            if self.shuffle:
                self._cached_perm = np.random.default_rng([self.seed, epoch]).permutation(self.epoch_len)
            else:
                self._cached_perm = np.arange(self.epoch_len)
            self._cached_epoch = epoch
        return self._cached_perm

    def epoch_index(self, index: int) -> EpochIndex:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        epoch, offset = divmod(index, self.epoch_len)
        return EpochIndex(epoch, int(self.epoch_permutation(epoch)[offset]))

    def item_indices(self, indices) -> np.ndarray:
        """The per-epoch item index (``EpochIndex.idx``) of each of ``indices``, in one vectorised lookup: what
        :meth:`epoch_index` gives one at a time, for a wrapped dataset whose items do not change with the epoch
        (:class:`IdentityMultiEpochDatasetWrapper`)."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and not (0 <= indices.min() and indices.max() < self.num_samples):
            raise IndexError(f"indices out of range for {self.num_samples} samples")
        epochs, offsets = np.divmod(indices, self.epoch_len)
        if indices.size and epochs[0] == epochs[-1]:  # a batch within one epoch (all but one per epoch)
            return self.epoch_permutation(int(epochs[0]))[offsets]
        items = np.empty_like(offsets)
        for epoch in np.unique(epochs):
            at = epochs == epoch
            items[at] = self.epoch_permutation(int(epoch))[offsets[at]]
        return items

    def __getitem__(self, index: int):
        return self.dataset[self.epoch_index(index)]

    def __getitems__(self, indices: list[int]):
        return fetch_many(self.dataset, [self.epoch_index(index) for index in indices])


def fetch_many(dataset, indices: list):
    """A batch of items: one ``__getitems__`` call where the dataset has it (as torch's DataLoader does), else a list
    of items for the collate function."""
    getitems = getattr(dataset, "__getitems__", None)
    return getitems(indices) if callable(getitems) else [dataset[index] for index in indices]
