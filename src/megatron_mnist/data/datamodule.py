"""The Lightning data module: splits, epoch-deterministic resampling and Megatron's micro/global batching."""

import lightning.pytorch as pl
import numpy as np
import torch
from nemo.lightning.data import WrappedDataLoader
from nemo.lightning.pytorch.plugins import MegatronDataSampler
from torch.utils.data import Subset, default_collate, random_split

from megatron_mnist import constraints, defaults
from megatron_mnist.data.dataset import MNISTCustom
from megatron_mnist.data.resampling import IdentityMultiEpochDatasetWrapper, MultiEpochDatasetResampler
from megatron_mnist.data.split import split_sizes


def collate(batch):
    """``MNISTCustom.__getitems__`` hands over whole batches; per-item fetching hands over a list of items."""
    return batch if isinstance(batch, dict) else default_collate(batch)


class MNISTDataModule(pl.LightningDataModule):
    """MNIST for Megatron: train/val split of the training files, the test files for prediction.

    Batching belongs to ``self.data_sampler`` (a ``MegatronDataSampler``): the strategy wraps each dataloader in
    Megatron's pretraining sampler, which yields micro-batches of this rank's shard, starting at the samples
    already consumed, so a resumed run sees exactly the batches an uninterrupted one would.

    Args:
        root: a folder with MNIST's IDX files (or torchvision's ``MNIST/raw`` layout); None = the embedded sample.
        micro_batch_size: items per forward pass on one rank.
        global_batch_size: items per optimizer step over all ranks; None = one micro-batch (the recipes' builder,
            ``mnist_data``, resolves it for the ranks started: ``constraints.global_batch_size``).
        val_size: digits held out of the training files for validation; None = one in twelve.
        num_workers: dataloader worker processes (with per-item fetching; see ``device_resident``).
        device_resident: keep the digits on the training device (the GPU under MegatronStrategy) and gather each
            batch there in one indexing op: no per-item Python, no worker processes, no host-to-device copy per
            step (MNIST fits: 188 MB in fp32). False: the classic per-item DataLoader, with ``num_workers``.
        split_seed / train_seed / val_seed: the split and the per-epoch shuffles (the original's 42, 43, 44).
        download: let torchvision download MNIST into ``root`` (needs internet).
    """

    seq_length = 1  # NeMo's data modules name their sequence length (its telemetry reads it); an item is one "token"

    def __init__(
        self,
        root: str | None = None,
        micro_batch_size: int = defaults.MICRO_BATCH_SIZE,
        global_batch_size: int | None = None,
        val_size: int | None = None,
        num_workers: int = 0,
        device_resident: bool = True,
        split_seed: int = 42,
        train_seed: int = 43,
        val_seed: int = 44,
        download: bool = False,
    ):
        super().__init__()
        self.root = root
        self.micro_batch_size = micro_batch_size
        self.global_batch_size = constraints.global_batch_size(micro_batch_size, global_batch_size, ranks=1)
        self.val_size = val_size
        self.num_workers = num_workers
        self.device_resident = device_resident
        self.split_seed, self.train_seed, self.val_seed = split_seed, train_seed, val_seed
        self.download = download
        self.data_sampler = MegatronDataSampler(
            seq_len=self.seq_length,  # Megatron's step wants a sequence length
            micro_batch_size=self.micro_batch_size,
            global_batch_size=self.global_batch_size,
            rampup_batch_size=None,
            output_log=False,  # this package logs its own losses; the sampler's extra log breaks predict_step
        )
        self._train_ds = self._val_ds = self._predict_ds = None

    # -- datasets ---------------------------------------------------------------------------------------------------
    def train_val_split(self) -> tuple[Subset, Subset]:
        full = MNISTCustom(self.root, train=True, download=self.download)
        generator = torch.Generator().manual_seed(self.split_seed)
        train, val = random_split(full, list(split_sizes(len(full), self.val_size)), generator=generator)
        return train, val

    def setup(self, stage: str = "") -> None:
        """Lightning's hook: the datasets for its trainer's run (its ``max_steps``, its device)."""
        trainer = self.trainer
        max_steps = trainer.max_steps if trainer is not None and trainer.max_steps > 0 else 1
        self.build(stage, max_steps, trainer.strategy.root_device if trainer is not None else None)

    def build(self, stage: str, max_steps: int, device=None) -> None:
        """The datasets of ``stage`` for a run of ``max_steps`` steps, the digits kept on ``device`` where
        ``device_resident`` (both engines call this: Lightning through :meth:`setup`)."""
        place = device if self.device_resident else None
        if stage in ("fit", "validate", "") and self._train_ds is None:
            train, val = self.train_val_split()
            if place is not None:
                train.dataset.to(place)  # the split's subsets share one MNISTCustom
            # Megatron's sampler walks its dataset once: make it as long as the whole run, one shuffle per epoch,
            # plus one spare global batch: a finished run started again builds its sampler (at the end of the data)
            # before Lightning sees that there is nothing left to do.
            self._train_ds = MultiEpochDatasetResampler(
                IdentityMultiEpochDatasetWrapper(train),
                num_samples=(max_steps + 1) * self.global_batch_size,
                shuffle=True,
                seed=self.train_seed,
            )
            self._val_ds = MultiEpochDatasetResampler(
                IdentityMultiEpochDatasetWrapper(val), shuffle=True, seed=self.val_seed
            )
        if stage in ("predict", "test") and self._predict_ds is None:
            self._predict_ds = MNISTCustom(self.root, train=False, download=self.download)
            if place is not None:
                self._predict_ds.to(place)

    def megatron_loader(self, mode: str, consumed_samples: int = 0, rank: int = 0, world_size: int = 1):
        """The ``mode`` dataloader (train, validation, predict) with Megatron's pretraining sampler: this rank's
        micro-batches of each global batch, from ``consumed_samples`` on. What MegatronStrategy makes of the
        dataloaders, and the CPU strategies and the megatron engine alike."""
        from nemo.lightning.data import add_megatron_sampler

        dataset = {"train": self._train_ds, "validation": self._val_ds, "predict": self._predict_ds}[mode]
        return add_megatron_sampler(
            self._dataloader(dataset, mode),
            micro_batch_size=self.micro_batch_size,
            global_batch_size=self.global_batch_size,
            consumed_samples=consumed_samples if mode == "train" else 0,
            drop_last=mode not in ("test", "predict"),
            dataloader_mode=mode,
            rank=rank,
            world_size=world_size,
        )

    def megatron_indices(self, mode: str, consumed_samples: int = 0, rank: int = 0, world_size: int = 1):
        """:meth:`megatron_loader`'s micro-batches as the indices of their digits in the MNIST files (int64 arrays):
        Megatron's sampler, then the epoch's permutation and the train/val split, one vectorised lookup each. What
        :meth:`files`' ``gather`` turns into the batches — in a CUDA graph too, from a buffer of indices."""
        loader = self.megatron_loader(mode, consumed_samples, rank, world_size)
        if mode == "predict":
            for indices in loader.batch_sampler:
                yield np.asarray(indices, dtype=np.int64)
            return
        resampler = loader.dataset  # MultiEpochDatasetResampler(IdentityMultiEpochDatasetWrapper(Subset(MNIST)))
        split = np.asarray(resampler.dataset.dataset.indices, dtype=np.int64)
        for indices in loader.batch_sampler:
            yield split[resampler.item_indices(indices)]

    def files(self, mode: str) -> MNISTCustom:
        """The MNIST files ``mode``'s indices point into: the training files (train and validation), the test files
        (predict); their ``gather`` turns indices into a batch, on the device the digits live on."""
        return self._predict_ds if mode == "predict" else self._train_ds.dataset.dataset.dataset

    def megatron_batches(self, mode: str, consumed_samples: int = 0, rank: int = 0, world_size: int = 1):
        """:meth:`megatron_loader`'s batches, for the megatron engine's loop: where no worker process or pinning
        has work to do (the digits gathered in place), :meth:`megatron_indices` gathered directly — the same
        batches without the DataLoader's per-batch machinery (on a 2-core CPU machine a batch took 112–145 µs
        through the DataLoader, 60 µs fetched directly; a graph-mode step on an H200 is ~300 µs)."""
        if not self.device_resident:  # the classic per-item DataLoader, its workers and pinning
            yield from self.megatron_loader(mode, consumed_samples, rank, world_size)
            return
        files = self.files(mode)
        for indices in self.megatron_indices(mode, consumed_samples, rank, world_size):
            yield files.gather(indices)

    def _dataloader(self, dataset, mode: str) -> WrappedDataLoader:
        # Batches gathered in place need no workers and no pinning; worker processes cannot use CUDA anyway.
        workers = 0 if self.device_resident else self.num_workers
        return WrappedDataLoader(
            mode=mode,
            dataset=dataset,
            num_workers=workers,
            pin_memory=torch.cuda.is_available() and not self.device_resident,
            persistent_workers=workers > 0,
            collate_fn=collate,
        )

    def train_dataloader(self) -> WrappedDataLoader:
        # Steps counted from here on consume samples after those restored from a checkpoint.
        self.data_sampler.init_global_step = self.trainer.global_step
        return self._dataloader(self._train_ds, "train")

    def val_dataloader(self) -> WrappedDataLoader:
        return self._dataloader(self._val_ds, "validation")

    def predict_dataloader(self) -> WrappedDataLoader:
        return self._dataloader(self._predict_ds, "predict")

    test_dataloader = predict_dataloader

    # -- resume: the samples already consumed travel in the checkpoint -----------------------------------------------
    def consumed_samples(self) -> int:
        steps = self.trainer.global_step - self.data_sampler.init_global_step
        return self.data_sampler.init_consumed_samples + steps * self.global_batch_size

    def state_dict(self) -> dict:
        return {"consumed_samples": self.consumed_samples()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.data_sampler.init_consumed_samples = state_dict["consumed_samples"]
        self.data_sampler.prev_consumed_samples = state_dict["consumed_samples"]
