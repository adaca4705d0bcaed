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
