"""The megatron engine (``trainer.loop=megatron``, job/megatron_engine.py) on CPU, through ``launch.py``: the same
recipe as the Lightning engine, the same per-step losses bit for bit, resumes that continue bit for bit, checkpoints
either engine reads, a pipeline, and a resume under the other engine refused before anything runs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from launcher_cli import launch

from megatron_mnist.model.weights import load_model_weights
from megatron_mnist.run_logs import logged

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def args(log_dir: Path, name: str, *extra: str) -> list[str]:
    return ["pretrain", f"log.log_dir={log_dir}", f"log.name={name}", "trainer.accelerator=cpu",
            "trainer.val_check_interval=10", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
            *extra, "--yes"]  # fmt: skip


def train(log_dir: Path, name: str, *extra: str) -> Path:
    result = launch(*args(log_dir, name, *extra))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    return log_dir / name


def last_checkpoint_step(run: Path, at_least: int, running=lambda: True) -> int:
    """Wait for the run's last checkpoint to reach ``at_least`` steps and return its step. Each save replaces the
    last one, and on CPU the next can come a few tens of milliseconds later: wait for any step at or past
    ``at_least``, never for one name (a 0.1 s poll missed step=50 in CI and requeued a finished job)."""
    deadline = time.time() + 300
    while time.time() < deadline:
        steps = [int(p.name.split("-")[0].removeprefix("step=")) for p in run.glob("checkpoints/step=*-last.ckpt")]
        if steps and max(steps) >= at_least:
            return max(steps)
        assert running(), "the run ended before the signal"
        time.sleep(0.02)
    raise AssertionError(f"no last checkpoint at step {at_least} or later in {run} after 300 s")


def same(a: Path, b: Path, column: str = "train_loss") -> None:
    compared = launch("compare", str(a), str(b), "--column", column)
    assert compared.returncode == 0, compared.stdout


def test_the_megatron_loop_trains_as_the_lightning_loop_bit_for_bit(tmp_path):
    lightning = train(tmp_path, "lightning", "trainer.max_steps=30")
    megatron = train(tmp_path, "megatron", "trainer.max_steps=30", "trainer.loop=megatron")
    same(lightning, megatron)
    same(lightning, megatron, "val_loss")
    assert [s for s, _ in logged(megatron, "val_loss")] == [9, 19, 29]
    assert len(list(megatron.glob("tb_logs/events.out.tfevents.*"))) == 1
    a, b = load_model_weights(lightning), load_model_weights(megatron)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the same layout: last and best, each a file and its context
    names = sorted(p.name for p in (megatron / "checkpoints").iterdir())
    assert names == sorted(p.name for p in (lightning / "checkpoints").iterdir() if not p.name.startswith("."))
    # more steps after a finished run: the straight run's steps and losses
    train(tmp_path, "megatron", "trainer.max_steps=50", "trainer.loop=megatron")
    straight = train(tmp_path, "straight", "trainer.max_steps=50")
    same(straight, megatron)
    same(straight, megatron, "val_loss")
    # a run continues with the engine it started with: refused before anything runs
    other = launch(*args(tmp_path, "megatron", "trainer.max_steps=60"))
    assert other.returncode == 2
    assert "was trained with trainer.loop=megatron and this run asks lightning" in other.stderr


def test_sigkill_and_sigterm_then_the_same_command_resumes_bit_for_bit(tmp_path):
    straight = train(tmp_path, "straight", "trainer.max_steps=80", "trainer.loop=megatron")
    command = [sys.executable, str(ROOT / "launch.py"), *args(tmp_path, "r", "trainer.max_steps=80",
                                                            "trainer.loop=megatron", "--direct")]  # fmt: skip
    for sig, after in ((signal.SIGKILL, 20), (signal.SIGTERM, 50)):
        job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        last_checkpoint_step(tmp_path / "r", after, running=lambda job=job: job.poll() is None)
        os.killpg(job.pid, sig)  # SIGTERM: what Slurm sends on preemption or requeue (the job saves, then exits)
        job.wait(timeout=120)
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [s for s, _ in logged(tmp_path / "r", "train_loss")] == list(range(80))
    same(straight, tmp_path / "r")
    same(straight, tmp_path / "r", "val_loss")
    a, b = load_model_weights(straight), load_model_weights(tmp_path / "r")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_cpu_ranks_train_as_one_rank_accumulating_two_micro_batches(tmp_path):
    one = train(tmp_path, "one", "trainer.max_steps=20", "trainer.loop=megatron", "data.micro_batch_size=32",
                "data.global_batch_size=64")  # fmt: skip
    two = train(tmp_path, "two", "trainer.max_steps=20", "trainer.loop=megatron", "data.micro_batch_size=32",
                "executor=local", "executor.ntasks_per_node=2")  # fmt: skip
    a, b = logged(one, "train_loss"), logged(two, "train_loss")
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(20))
    # fp32: the 2-rank all-reduce sums the two micro-batches' gradients in another order (as the Lightning engine)
    torch.testing.assert_close(torch.tensor([v for _, v in a]), torch.tensor([v for _, v in b]), rtol=1e-6, atol=1e-7)


def test_the_pipeline_under_the_megatron_loop(tmp_path):
    result = launch("pipeline", "--loop", "megatron", "--max-steps", "100", "--log-dir", str(tmp_path), "--yes",
                    "pretrain.trainer.accelerator=cpu", "finetune.trainer.accelerator=cpu",
                    "predict.trainer.accelerator=cpu")  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    metrics = json.loads((tmp_path / "pipeline" / "predict" / "metrics.json").read_text())
    assert metrics["num_digits"] == 2000 and metrics["accuracy"] > 0.3
    assert (tmp_path / "pipeline" / "predict" / "report" / "index.html").is_file()
    for stage in ("pretrain", "finetune"):
        record = json.loads((tmp_path / "pipeline" / stage / "record" / "run.json").read_text())
        assert record["engine"] == "megatron"


def test_a_requeued_slurm_job_resumes_where_it_stopped(tmp_path):
    from test_executors import INFRA, experiment_id_of, sh, slurm_job_ids_from_status

    # 2,000 steps, a checkpoint every 100: the requeue lands while ~1,900 steps (seconds on CI's CPU) are still to go
    steps = ["trainer.max_steps=2000", "trainer.val_check_interval=100", "trainer.loop=megatron"]
    sh("bash", str(INFRA / "slurm_up.sh"), timeout=900)
    straight = train(tmp_path, "straight", *steps)
    slurm = ["executor=slurm", "executor.partition=debug", "executor.time=00:10:00"]
    submitted = launch(*args(tmp_path, "requeued", *steps, *slurm, "--detach"))
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-2000:]
    experiment = experiment_id_of(submitted.stdout)
    (job_id,) = slurm_job_ids_from_status(experiment)
    at = last_checkpoint_step(tmp_path / "requeued", 100)
    sh("scontrol", "requeue", job_id)  # as a preemption does: SIGTERM, the job saves and exits, Slurm runs it again
    assert at < 2000, f"the job had finished (step {at}) before the requeue"
    watched = launch("watch", experiment, "--every", "1", timeout=900)
    assert watched.returncode == 0, watched.stdout[-3000:] + watched.stderr[-2000:]
    assert "steps: 2000" in watched.stdout
    assert [s for s, _ in logged(tmp_path / "requeued", "train_loss")] == list(range(2000))
    assert len(list((tmp_path / "requeued").glob("csv_logs/version_*"))) == 2  # it stopped and ran again
    same(straight, tmp_path / "requeued")
