"""The MNIST dataset as the tutorial has it: a torchvision ``MNIST`` whose items are ``{data, label, idx}`` dicts."""

from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from torchvision.datasets import MNIST

from megatron_mnist.data.idx import IDXError, embedded_sample_root, mnist_folder, read_mnist, unit_range


class MnistItem(TypedDict):
    data: torch.Tensor  # [1, 28, 28] float in [0, 1]
    label: int
    idx: int


class MNISTCustom(MNIST):
    """MNIST returning :class:`MnistItem` dicts, read from ``root`` without any download.

    ``root`` may hold the IDX files itself (plain or gzip, as the embedded sample does) or be the folder that
    ``torchvision.datasets.MNIST(root, download=True)`` filled (files under ``root/MNIST/raw``).
    """

    def __init__(self, root: str | Path | None = None, train: bool = True, download: bool = False):
        root = Path(root) if root is not None else embedded_sample_root()
        if not root.is_dir():
            raise IDXError(f"data.root={root} is not a directory (expected a folder holding MNIST's IDX files)")
        super().__init__(root, train=train, download=download)

    @property
    def raw_folder(self) -> str:
        # torchvision looks under root/<ClassName>/raw; a download lands in root/MNIST/raw. Accept that layout and
        # a folder holding the files directly.
        return str(mnist_folder(self.root))

    def _check_exists(self) -> bool:
        return True  # _load_data raises an error that names the missing file, which beats torchvision's message

    def _check_legacy_exist(self) -> bool:
        return False

    def _load_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = read_mnist(self.raw_folder, "train" if self.train else "t10k")
        # Scale once here rather than per item through PIL and ToTensor: same values, far less work per step.
        data = torch.from_numpy(unit_range(images)).unsqueeze(1)
        return data, torch.from_numpy(labels.astype(np.int64))

    def __getitem__(self, index: int) -> MnistItem:
        return {"data": self.data[index], "label": int(self.targets[index]), "idx": int(index)}

    def __getitems__(self, indices: list[int]) -> MnistItem:
        """A whole batch in one gather (the DataLoader calls this when it exists): the items ``__getitem__`` gives,
        already collated, on the device the images live on (see :meth:`to`)."""
        return self.gather(indices)

    def gather(self, indices) -> MnistItem:
        """The batch of the items at ``indices`` (a list, an int64 array, or a long tensor), on the digits' device.
        Given a long tensor already there, it is indexing only — no copy, no new tensor — so a CUDA graph can
        capture it reading its indices from a buffer."""
        index = torch.as_tensor(indices, dtype=torch.long).to(self.data.device, non_blocking=True)
        return {"data": self.data[index], "label": self.targets[index], "idx": index}

    def to(self, device: torch.device | str) -> "MNISTCustom":
        """Keep the images and labels on ``device`` (MNIST is 188 MB in fp32, the embedded sample 25 MB), so that a
        batch is one gather there instead of a copy per step."""
        self.data, self.targets = self.data.to(device), self.targets.to(device)
        return self
