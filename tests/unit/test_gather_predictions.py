"""Predictions of several ranks become one row per held-out digit, in the dataset's order (real gloo processes)."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from megatron_mnist.job.api import gather_predictions


def shard_of(rank: int, world: int, n: int = 10, micro: int = 2) -> dict:
    # Megatron's sampler: each global batch of micro × world, rank r takes its slice; the last batch is padded
    # with negative indices
    indices = list(range(n)) + list(range(-1, -(-n % (micro * world)) - 1, -1))
    mine = [
        i for start in range(0, len(indices), micro * world) for i in indices[start:][rank * micro : (rank + 1) * micro]
    ]
    idx = torch.tensor(mine)
    return {"idx": idx, "z": (idx % n).float().unsqueeze(1) * 10, "label": idx % n}


def test_one_rank_drops_padding_and_sorts():
    predictions = gather_predictions(shard_of(0, 1, n=9, micro=4))
    assert predictions["idx"].tolist() == list(range(9))
    assert predictions["z"][:, 0].tolist() == [10.0 * i for i in range(9)]


def _rank(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    predictions = gather_predictions(shard_of(rank, world))
    if rank == 0:
        torch.save(predictions, out)
    else:
        assert predictions is None
    dist.destroy_process_group()


def test_three_ranks_give_every_digit_once_on_rank_zero(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "p.pt")
    mp.spawn(_rank, args=(3, port, out), nprocs=3, join=True)
    predictions = torch.load(out)
    assert predictions["idx"].tolist() == list(range(10))
    assert predictions["label"].tolist() == list(range(10))
