import gzip
import shutil

import pytest
import torch

from megatron_mnist.data.dataset import MNISTCustom, embedded_sample_root
from megatron_mnist.data.idx import IDXError, read_idx

SAMPLE = embedded_sample_root()


def test_item_is_the_tutorials_dict():
    ds = MNISTCustom(train=True)
    item = ds[5]
    assert set(item) == {"data", "label", "idx"}
    assert item["data"].shape == (1, 28, 28) and item["data"].dtype == torch.float32
    assert 0.0 <= item["data"].min() and item["data"].max() <= 1.0 and item["data"].max() > 0.5
    assert isinstance(item["label"], int) and 0 <= item["label"] <= 9
    assert item["idx"] == 5


def test_embedded_sample_sizes_and_class_counts():
    train, test = MNISTCustom(train=True), MNISTCustom(train=False)
    assert (len(train), len(test)) == (8000, 2000)
    counts = torch.bincount(torch.cat([train.targets, test.targets]), minlength=10).tolist()
    assert counts == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]  # the sample's README


def test_train_val_split_keeps_the_originals_ratio_and_seed():
    from megatron_mnist.data.datamodule import MNISTDataModule

    train, val = MNISTDataModule().train_val_split()
    assert (len(train), len(val)) == (7333, 667)  # 55,000 / 5,000 is 11 : 1
    assert set(train.indices).isdisjoint(val.indices)
    again, _ = MNISTDataModule().train_val_split()
    assert list(train.indices) == list(again.indices)
    other, _ = MNISTDataModule(val_size=1000).train_val_split()
    assert len(other) == 7000


def test_torchvision_download_layout_with_plain_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in SAMPLE.glob("t10k-*.gz"):
        (raw / gz.stem).write_bytes(gzip.decompress(gz.read_bytes()))
    ds = MNISTCustom(tmp_path, train=False)
    assert len(ds) == 2000 and torch.equal(ds.data, MNISTCustom(train=False).data)


def test_missing_file_is_named(tmp_path):
    shutil.copy(SAMPLE / "t10k-images-idx3-ubyte.gz", tmp_path)
    with pytest.raises(IDXError, match="t10k-labels-idx1-ubyte"):
        MNISTCustom(tmp_path, train=False)


def test_root_that_is_not_a_directory():
    with pytest.raises(IDXError, match="data.root=/nonexistent/mnist is not a directory"):
        MNISTCustom("/nonexistent/mnist")


def test_truncated_file_is_named(tmp_path):
    raw = gzip.decompress((SAMPLE / "t10k-images-idx3-ubyte.gz").read_bytes())
    bad = tmp_path / "t10k-images-idx3-ubyte"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(IDXError, match=r"t10k-images-idx3-ubyte is truncated"):
        read_idx(bad, ndim=3)


def test_corrupt_header_and_bad_gzip_are_named(tmp_path):
    bad = tmp_path / "train-labels-idx1-ubyte"
    bad.write_bytes(b"\x12\x34\x56\x78" + b"\x00" * 100)
    with pytest.raises(IDXError, match="train-labels-idx1-ubyte is not an unsigned-byte IDX file"):
        read_idx(bad, ndim=1)
    gz = tmp_path / "train-labels-idx1-ubyte.gz"
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(IDXError, match="cannot read MNIST file .*train-labels-idx1-ubyte.gz"):
        read_idx(gz, ndim=1)


def _megatron_batches(device_resident: bool, n: int, consumed: int = 0) -> list[dict]:
    """The first ``n`` training micro-batches as the strategies feed them: Megatron's sampler over the data module."""
    from nemo.lightning.data import add_megatron_sampler

    from megatron_mnist.data.datamodule import MNISTDataModule

    dm = MNISTDataModule(micro_batch_size=32, device_resident=device_resident)
    dm.setup("fit")
    dm._train_ds.num_samples = 10 * 8000  # setup sized it for a trainer's max_steps; there is none here
    loader = add_megatron_sampler(
        dm._dataloader(dm._train_ds, "train"), micro_batch_size=32, global_batch_size=32, consumed_samples=consumed
    )
    batches = iter(loader)
    return [next(batches) for _ in range(n)]


@pytest.mark.parametrize("consumed", [0, 8000 * 3 - 64])  # from the start, and across an epoch boundary
def test_batched_gather_gives_the_per_item_batches(consumed):
    gathered, per_item = _megatron_batches(True, 4, consumed), _megatron_batches(False, 4, consumed)
    for a, b in zip(gathered, per_item, strict=True):
        assert set(a) == set(b) == {"data", "label", "idx"}
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    assert gathered[0]["data"].shape == (32, 1, 28, 28)


def test_resident_dataset_moves_and_gathers_on_its_device():
    ds = MNISTCustom(train=False).to("meta")  # any device but the CPU: the gather must happen there
    batch = ds.__getitems__([3, 1, 4])
    assert batch["data"].device.type == "meta" and batch["data"].shape == (3, 1, 28, 28)
    assert batch["idx"].device.type == "meta" and batch["label"].shape == (3,)
