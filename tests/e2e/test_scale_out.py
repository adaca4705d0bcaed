"""Data-parallel CPU ranks (gloo) through the launcher's torchrun: the same recipe, only sizes change."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from megatron_mnist.checkpoint import load_model_weights
from megatron_mnist.run_logs import logged

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
# fp32 on one machine: the 2-rank all-reduce sums the same two micro-batch gradients the 1-rank run accumulates,
# in another order. Measured here: |Δloss| ≤ 1e-8 (relative 1e-7); allow ten times float32's epsilon on top.
RTOL, ATOL = 1e-6, 1e-7


def launch(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *args, "--yes"], capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    return result


def pretrain(log_dir: Path, name: str, *extra: str) -> Path:
    launch(
        "pretrain",
        f"log.log_dir={log_dir}",
        f"log.name={name}",
        "trainer.accelerator=cpu",
        "trainer.max_steps=30",
        "trainer.val_check_interval=10",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "data.micro_batch_size=32",
        *extra,
    )
    return log_dir / name


def assert_same_run(a: Path, b: Path) -> None:
    for column in ("train_loss", "val_loss"):
        ra, rb = logged(a, column), logged(b, column)
        assert [s for s, _ in ra] == [s for s, _ in rb], column
        torch.testing.assert_close(
            torch.tensor([v for _, v in ra]), torch.tensor([v for _, v in rb]), rtol=RTOL, atol=ATOL
        )
    wa, wb = load_model_weights(a), load_model_weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=RTOL, atol=ATOL, msg=key)


def test_two_cpu_ranks_train_as_one_rank_with_the_same_global_batch(tmp_path):
    # 2 ranks × micro 32 (global 64 by default) against 1 rank × micro 32 × 2 accumulated micro-batches
    two = pretrain(tmp_path, "two", "executor=local", "executor.ntasks_per_node=2")
    one = pretrain(tmp_path, "one", "data.global_batch_size=64")
    assert [s for s, _ in logged(two, "val_loss")] == [9, 19, 29]  # validation every 10 optimizer steps
    assert (two / "nemo_log_globalrank-1_localrank-1.txt").is_file()  # both ranks wrote into one run folder
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["one", "two"]
    assert_same_run(two, one)

    # the 2-rank checkpoint predicts in one process
    launch("predict", f"model.initial_ckpt_path={two}", "model.task=pretrain", f"log.log_dir={tmp_path}",
           "trainer.accelerator=cpu")  # fmt: skip
    predictions = torch.load(tmp_path / "predict" / "predictions.pt")
    assert predictions["z"].shape == (2000, 3)
    assert json.loads((tmp_path / "predict" / "metrics.json").read_text())["num_digits"] == 2000
