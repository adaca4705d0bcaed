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


@pytest.mark.parametrize(
    "mode, consumed, rank", [("train", 0, 0), ("train", 7333 * 2 - 48, 1), ("validation", 0, 0), ("predict", 0, 1)]
)
def test_the_engines_batches_are_the_dataloaders(mode, consumed, rank):
    """The megatron engine's loop fetches the sampler's batches without torch's DataLoader: the same batches, across
    an epoch's end, per rank, the last partial batch of a prediction included."""
    from megatron_mnist.data.datamodule import MNISTDataModule

    dm = MNISTDataModule(micro_batch_size=32, global_batch_size=64)
    dm.build("predict" if mode == "predict" else "fit", max_steps=400)
    direct = list(dm.megatron_batches(mode, consumed, rank, world_size=2))
    loaded = list(dm.megatron_loader(mode, consumed, rank, world_size=2))
    assert len(direct) == len(loaded) > 0
    for a, b in zip(direct, loaded, strict=True):
        assert set(a) == set(b) == {"data", "label", "idx"}
        assert all(torch.equal(a[key], b[key]) for key in a)
    if mode == "predict":
        assert len(direct[-1]["idx"]) < 32  # 2,000 digits over 2 ranks of 32: a partial last batch


def test_resident_dataset_moves_and_gathers_on_its_device():
    ds = MNISTCustom(train=False).to("meta")  # any device but the CPU: the gather must happen there
    batch = ds.__getitems__([3, 1, 4])
    assert batch["data"].device.type == "meta" and batch["data"].shape == (3, 1, 28, 28)
    assert batch["idx"].device.type == "meta" and batch["label"].shape == (3,)


def _idx(dims: tuple[int, ...], data: bytes) -> bytes:
    return bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + data


def _folder_with(tmp_path, split="train", images=None, labels=None):
    """A copy of the sample's two files of ``split``, with either replaced by raw IDX bytes."""
    for kind, replacement in (("images-idx3", images), ("labels-idx1", labels)):
        stem = f"{split}-{kind}-ubyte"
        if replacement is None:
            shutil.copy(SAMPLE / f"{stem}.gz", tmp_path)
        else:
            (tmp_path / stem).write_bytes(replacement)
    return tmp_path


@pytest.mark.parametrize(
    "images, labels, message",
    [
        (None, _idx((7999,), bytes(7999)), "holds 8000 images, .*train-labels-idx1-ubyte 7999 labels"),
        (_idx((3, 10, 10), bytes(300)), _idx((3,), bytes(3)), "train-images-idx3-ubyte holds 10×10 images, not 28×28"),
        (_idx((0, 28, 28), b""), _idx((0,), b""), "train-images-idx3-ubyte holds no images"),
        (_idx((2, 28, 28), bytes(1568)), _idx((2,), bytes([3, 11])), "labels-idx1-ubyte holds label 11: labels are"),
        (_idx((2, 28, 28), bytes(1568)), _idx((2,), bytes([255, 0])), "holds label 255"),
    ],
)
def test_files_that_are_not_mnist_are_named_before_the_job_and_in_it(tmp_path, images, labels, message):
    # before: fewer labels, 10×10 images, labels 11 / 255 trained anyway (pretrain) or failed without a file name
    from megatron_mnist.data.idx import check_mnist

    folder = _folder_with(tmp_path, images=images, labels=labels)
    with pytest.raises(IDXError, match=message):
        check_mnist(folder, "train")  # the launcher's pre-submit check
    with pytest.raises(IDXError, match=message):
        MNISTCustom(folder, train=True)  # the job's own reading


def test_a_gzip_bomb_is_refused_without_being_expanded(tmp_path):
    import resource

    from megatron_mnist.data.idx import check_mnist

    # an images file whose header announces the sample's 8000 digits but whose gzip expands to 400 MB of zeros
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        f.write(_idx((8000, 28, 28), b""))
        for _ in range(400):
            f.write(bytes(1 << 20))
    assert bomb.stat().st_size < 1 << 20
    shutil.copy(SAMPLE / "train-labels-idx1-ubyte.gz", tmp_path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(IDXError, match=r"truncated or corrupt: header says \(8000, 28, 28\) = 6272000 bytes, file "
                       r"holds more"):  # fmt: skip
        check_mnist(tmp_path, "train")
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 100_000, grown_kb  # never the 400 MB it expands to
    huge = tmp_path / "huge" / "train-images-idx3-ubyte"
    huge.parent.mkdir()
    huge.write_bytes(_idx((1 << 20, 1 << 10, 1 << 10), b""))  # a header that claims 1 TB
    with pytest.raises(IDXError, match="more than an MNIST file holds"):
        read_idx(huge, ndim=3)


def test_the_split_rule_is_one_for_the_checks_and_the_data_module():
    from megatron_mnist.data.split import split_sizes

    assert split_sizes(8000, None) == (7333, 667)
    assert split_sizes(8000, 1000) == (7000, 1000)
    for bad in (0, 8000, 9000):
        with pytest.raises(ValueError, match=f"data.val_size={bad} must be between 1 and 7999"):
            split_sizes(8000, bad)
