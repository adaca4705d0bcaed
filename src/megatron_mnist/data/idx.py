"""Reading MNIST's IDX files (plain or gzip) with errors that name the file and what is wrong with it.

The launcher's pre-submit checks read these files too: numpy is imported only when an array is made, so importing
this module costs the launcher nothing.
"""

import gzip
import math
import os
from pathlib import Path

# IDX magic: two zero bytes, a type code, the number of dimensions. MNIST uses 0x08 (unsigned byte).
_UBYTE = 0x08


class IDXError(ValueError):
    """An IDX file is missing, truncated or not an IDX file."""


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


def check_idx(path: str | os.PathLike, ndim: int) -> tuple[bytes, int, tuple[int, ...]]:
    """Read an IDX file whole and check it: its bytes, where the data starts, and its shape; else IDXError."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise IDXError(f"cannot read MNIST file {path}: {e}") from e
    if len(raw) < 4 + 4 * ndim:
        raise IDXError(f"MNIST file {path} is truncated: {len(raw)} bytes, shorter than its header")
    zeros, dtype, dims = raw[0:2], raw[2], raw[3]
    if zeros != b"\x00\x00" or dtype != _UBYTE or dims != ndim:
        raise IDXError(
            f"MNIST file {path} is not an unsigned-byte IDX file of {ndim} dimension(s) "
            f"(header {raw[:4].hex()}, expected 000008{ndim:02x})"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = math.prod(shape)
    if len(raw) - offset != expected:
        raise IDXError(
            f"MNIST file {path} is truncated or corrupt: header says {shape} = {expected} bytes, "
            f"file holds {len(raw) - offset}"
        )
    return raw, offset, shape
