"""The GPU path as users run it: ``launch.py`` on one GPU and on every GPU of the machine (MegatronStrategy, bf16,
Megatron's distributed Adam and checkpoints). Skipped where CUDA is absent (CI); run on a GPU machine with
``bash tests/gpu/run_on_device.sh`` (README: GPU check). Each test prints what it measured."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from megatron_mnist.run_logs import logged, rows

ROOT = Path(__file__).resolve().parents[2]
GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(GPUS == 0, reason="needs a CUDA GPU")]
many_gpus = pytest.mark.skipif(GPUS < 2, reason="needs 2 GPUs or more")
QUIET = ["trainer.enable_progress_bar=false", "--yes"]


def launch(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """launch.py in its own process group; past ``timeout`` every process of it gets SIGABRT (faulthandler prints
    each one's stack: a hang leaves its place in the log), then SIGKILL."""
    started = time.perf_counter()
    job = subprocess.Popen(
        [sys.executable, str(ROOT / "launch.py"), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env=dict(os.environ, COLUMNS="200"),
    )  # fmt: skip
    try:
        out, _ = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGABRT)
        time.sleep(5)
        os.killpg(job.pid, signal.SIGKILL)
        out, _ = job.communicate()
        pytest.fail(f"launch.py {' '.join(args)} hung past {timeout} s:\n{out[-6000:]}")
    print(f"[{time.perf_counter() - started:5.1f} s] launch.py {' '.join(args)} -> {job.returncode}")
    if check:
        assert job.returncode == 0, out[-6000:]
    return subprocess.CompletedProcess(job.args, job.returncode, out, "")


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def max_rel_diff(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> float:
    assert [s for s, _ in a] == [s for s, _ in b], "different steps logged"
    return max(abs(x - y) / max(abs(y), 1e-12) for (_, x), (_, y) in zip(a, b, strict=True))


def test_pipeline_on_one_gpu(tmp_path):
    launch("pipeline", "--log-dir", str(tmp_path), "--yes", timeout=420)
    found = metrics(tmp_path / "pipeline" / "predict")
    predictions = torch.load(tmp_path / "pipeline" / "predict" / "predictions.pt")
    print(f"one GPU: held-out accuracy {found['accuracy']:.4f} on {found['num_digits']} digits")
    assert found["num_digits"] == 2000 and predictions["idx"].tolist() == list(range(2000))
    assert found["accuracy"] >= 0.8
    assert (tmp_path / "pipeline" / "predict" / "report" / "index.html").is_file()


@many_gpus
def test_pipeline_on_every_gpu_predicts_each_digit_once_and_one_gpu_agrees(tmp_path):
    # through NeMo-Run's torchrun launcher (the local executor's default for several ranks, named here)
    every = ["executor=local", f"executor.ntasks_per_node={GPUS}", "executor.launcher=torchrun"]
    launch("pipeline", "--log-dir", str(tmp_path), *every, "--yes", timeout=540)  # returns: every rank exited
    found = metrics(tmp_path / "pipeline" / "predict")
    many = torch.load(tmp_path / "pipeline" / "predict" / "predictions.pt")
    assert found["num_digits"] == 2000 and many["idx"].tolist() == list(range(2000))
    assert found["accuracy"] >= 0.8
    # the N-GPU finetune checkpoint predicted on one GPU (a reshard): the same predictions within bf16 rounding
    launch("predict", f"model.initial_ckpt_path={tmp_path / 'pipeline' / 'finetune'}", f"log.log_dir={tmp_path}",
           *QUIET)  # fmt: skip
    one = torch.load(tmp_path / "predict" / "predictions.pt")
    agree = (one["digit_logits"].argmax(-1) == many["digit_logits"].argmax(-1)).float().mean().item()
    print(
        f"{GPUS} GPUs: accuracy {found['accuracy']:.4f}; the same checkpoint on 1 GPU: "
        f"{metrics(tmp_path / 'predict')['accuracy']:.4f}; predicted digits agree on {agree:.4f}"
    )
    assert torch.equal(one["label"], many["label"]) and agree >= 0.995


def pretrain(log_dir: Path, name: str, steps: int, *extra: str) -> list[str]:
    return ["pretrain", f"log.log_dir={log_dir}", f"log.name={name}", f"trainer.max_steps={steps}",
            "trainer.val_check_interval=100", "trainer.log_every_n_steps=1", *extra, *QUIET]  # fmt: skip


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants: NeMo-Run's local scheduler starts the job in a session of its own,
    so killing the launcher's process group leaves the job running."""
    import psutil

    tree = psutil.Process(pid).children(recursive=True) + [psutil.Process(pid)]
    for process in tree:
        process.kill()
    psutil.wait_procs(tree, timeout=30)


def test_one_gpu_sigkill_then_resume_and_run_to_run_determinism(tmp_path):
    steps = 1500
    launch(*pretrain(tmp_path / "a", "r", steps))
    a = logged(tmp_path / "a" / "r", "train_loss")

    killed = tmp_path / "k"
    args = [sys.executable, str(ROOT / "launch.py"), *pretrain(killed, "r", steps)]
    job = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while max(last_checkpoint_steps(killed / "r"), default=0) < 300 and time.time() < deadline:
        assert job.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    time.sleep(2)  # mid-run, past the save
    at_kill = sorted(p.name for p in (killed / "r" / "checkpoints").iterdir())
    kill_tree(job.pid)  # the launcher, the job and its children
    before = logged(killed / "r", "train_loss")
    killed_at = before[-1][0]
    same = before == a[: len(before)]
    print(
        f"one GPU, the same command twice: train_loss {'bit for bit identical' if same else 'differs'} "
        f"over the killed run's {len(before)} steps (max rel diff {max_rel_diff(before, a[: len(before)]):.2e})"
    )
    print(f"checkpoints at the kill (after step {killed_at}): {at_kill}")  # fmt: skip

    launch(*pretrain(killed, "r", steps))
    assert not (killed / "r-2").exists()  # the same run folder: the killed run holds no lock
    versions = sorted((killed / "r").glob("csv_logs/version_*/metrics.csv"))
    assert len(versions) == 2
    resumed = rows(versions[-1], "train_loss")
    first = resumed[0][0]
    reference = [(s, v) for s, v in a if s >= first]
    diff = max_rel_diff(resumed, reference)
    print(f"resumed at step {first}: resumed losses vs an uninterrupted run: "
          f"{'bit for bit identical' if resumed == reference else f'max rel diff {diff:.2e}'}")  # fmt: skip
    assert first % 100 == 0 and 300 <= first <= killed_at + 1 and resumed[-1][0] == steps - 1
    # Measured on an H200 (2026-11-27): uninterrupted runs are bit for bit identical, but the resumed steps differ
    # from them by up to 2.5e-2 (relative): some state is not restored exactly on the GPU path (on CPU, fp32, a
    # resume is bit for bit). Not explained yet (README, GPU check); this bound keeps it from growing unnoticed.
    assert diff <= 0.05


def last_checkpoint_steps(run_dir: Path) -> list[int]:
    """Steps of the run's ``step=N-...-last`` checkpoints (GPU: folders; N is the logged step, one short of the
    steps done)."""
    return [int(re.match(r"step=(\d+)", p.name)[1]) for p in run_dir.glob("checkpoints/step=*-last")]


@many_gpus
def test_n_gpus_match_one_gpu_with_the_same_global_batch_and_resume_on_one(tmp_path):
    batch = [f"data.global_batch_size={64 * GPUS}", "data.micro_batch_size=64"]
    every = ["executor=local", f"executor.ntasks_per_node={GPUS}", "executor.launcher=torchrun"]
    launch(*pretrain(tmp_path, "n", 200, *batch, *every))
    launch(*pretrain(tmp_path, "one", 200, *batch))  # one GPU accumulates GPUS micro-batches per step
    n, one = logged(tmp_path / "n", "train_loss"), logged(tmp_path / "one", "train_loss")
    diff = max_rel_diff(n, one)
    print(f"{GPUS} GPUs vs 1 GPU × {GPUS} micro-batches (global {64 * GPUS}): train_loss max rel diff {diff:.2e}")
    assert diff <= 0.05
    # the N-GPU run continues on one GPU from its distributed checkpoint (same global batch)
    launch(*pretrain(tmp_path, "n", 300, *batch))
    resumed = rows(sorted((tmp_path / "n").glob("csv_logs/version_*/metrics.csv"))[-1], "train_loss")
    print(f"{GPUS} GPUs -> 1 GPU: resumed at step {resumed[0][0]}, loss {resumed[0][1]:.4f} -> {resumed[-1][1]:.4f}")
    assert resumed[0][0] == 200 and resumed[-1][0] == 299
