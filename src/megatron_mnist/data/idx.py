"""Reading MNIST's IDX files (plain or gzip) with errors that name the file and what is wrong with it.

The launcher's pre-submit checks read these files too: numpy is imported only when an array is made, so importing
this module costs the launcher nothing.
"""

import gzip
import math
import os
from importlib import resources
from pathlib import Path

from megatron_mnist.errors import IDXError

# IDX magic: two zero bytes, a type code, the number of dimensions. MNIST uses 0x08 (unsigned byte).
_UBYTE = 0x08


def embedded_sample_root() -> Path:
    """The 10,000-digit MNIST sample shipped inside the package (8,000 train, 2,000 test)."""
    return Path(str(resources.files("megatron_mnist.data") / "sample"))


def mnist_folder(root: str | os.PathLike | None) -> Path:
    """The folder holding a ``data.root``'s IDX files: ``root/MNIST/raw`` where torchvision's download put them,
    else ``root`` itself; None = the embedded sample."""
    if root is None:
        return embedded_sample_root()
    downloaded = Path(root) / "MNIST" / "raw"
    return downloaded if downloaded.is_dir() else Path(root)


def find_idx_file(folder: str | os.PathLike, stem: str) -> Path:
    """The IDX file named ``stem`` in ``folder``, plain or ``.gz``; a clear error if neither is there."""
    folder = Path(folder)
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise IDXError(f"MNIST file not found: {folder / stem}[.gz] (expected the standard IDX files in {folder})")


def read_idx(path: str | os.PathLike, ndim: int):
    """The uint8 array stored in an IDX file of ``ndim`` dimensions (3 for images, 1 for labels)."""
    import numpy as np

    raw, offset, shape = check_idx(path, ndim)
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape)


# The largest data an IDX file of ours may hold once decompressed: full MNIST's training images are 47 MB, and a
# header claiming more than this is not MNIST (a small gzip can expand to gigabytes: never decompress past this).
MAX_IDX_BYTES = 1 << 30
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10


def check_idx(path: str | os.PathLike, ndim: int) -> tuple[bytes, int, tuple[int, ...]]:
    """Read an IDX file whole and check it: its bytes, where the data starts, and its shape; else IDXError.

    Never reads (or decompresses) more than the header announces plus one byte, so a file that holds more than
    its header says is found without expanding it whole."""
    path = Path(path)
    header_len = 4 + 4 * ndim
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            header = f.read(header_len)
            if len(header) < header_len:
                raise IDXError(f"MNIST file {path} is truncated: {len(header)} bytes, shorter than its header")
            zeros, dtype, dims = header[0:2], header[2], header[3]
            if zeros != b"\x00\x00" or dtype != _UBYTE or dims != ndim:
                raise IDXError(
                    f"MNIST file {path} is not an unsigned-byte IDX file of {ndim} dimension(s) "
                    f"(header {header[:4].hex()}, expected 000008{ndim:02x})"
                )
            shape = tuple(int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
            expected = math.prod(shape)
            if expected > MAX_IDX_BYTES:
                raise IDXError(
                    f"MNIST file {path} claims {shape} = {expected} bytes, more than an MNIST file holds "
                    f"({MAX_IDX_BYTES} at most)"
                )
            data = f.read(expected + 1)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise IDXError(f"cannot read MNIST file {path}: {e}") from e
    if len(data) != expected:
        held = f"{len(data)}" if len(data) <= expected else "more"
        raise IDXError(
            f"MNIST file {path} is truncated or corrupt: header says {shape} = {expected} bytes, file holds {held}"
        )
    return header + data, header_len, shape


def check_mnist(folder: str | os.PathLike, split: str) -> int:
    """The number of digits in one split (``train`` or ``t10k``) of ``folder``, checked as MNIST: the two files
    agree on N ≥ 1, images are 28×28, labels are digits 0–9; else IDXError naming the file. No numpy: the
    launcher's checks call it."""
    return _checked_split(folder, split)[2]


def unit_range(images):
    """uint8 pixels as float32 in [0, 1]: how the dataset (and the report) see a digit."""
    import numpy as np

    return images.astype(np.float32) / 255.0


def read_mnist(folder: str | os.PathLike, split: str):
    """(images [N, 28, 28], labels [N]) uint8 arrays of one split, checked as :func:`check_mnist` does."""
    import numpy as np

    (images, images_at, images_shape), (labels, labels_at, _), _ = _checked_split(folder, split)
    return (
        np.frombuffer(images, dtype=np.uint8, offset=images_at).reshape(images_shape),
        np.frombuffer(labels, dtype=np.uint8, offset=labels_at),
    )


def _checked_split(folder, split: str):
    images_file = find_idx_file(folder, f"{split}-images-idx3-ubyte")
    labels_file = find_idx_file(folder, f"{split}-labels-idx1-ubyte")
    images, labels = check_idx(images_file, ndim=3), check_idx(labels_file, ndim=1)
    (count, *size), (label_count,) = images[2], labels[2]
    if tuple(size) != IMAGE_SHAPE:
        raise IDXError(f"MNIST file {images_file} holds {size[0]}×{size[1]} images, not 28×28")
    if count == 0:
        raise IDXError(f"MNIST file {images_file} holds no images")
    if count != label_count:
        raise IDXError(f"MNIST files disagree: {images_file} holds {count} images, {labels_file} {label_count} labels")
    largest = max(labels[0][labels[1] :])  # bytes: one pass in C
    if largest >= NUM_CLASSES:
        raise IDXError(f"MNIST file {labels_file} holds label {largest}: labels are digits 0-{NUM_CLASSES - 1}")
    return images, labels, count
