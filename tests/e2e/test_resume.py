"""Killed runs lose nothing: the same command resumes from the last complete checkpoint, bit for bit (CPU, fp32)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from megatron_mnist.run_logs import logged, rows
from megatron_mnist.run_record import checkpoint_step

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def command(log_dir: Path, steps: int = 60) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "launch.py"),
        "pretrain",
        "--direct",
        "--yes",
        f"log.log_dir={log_dir}",
        "log.name=r",
        f"trainer.max_steps={steps}",
        "trainer.val_check_interval=10",
        "trainer.log_every_n_steps=1",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
    ]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    (last,) = run_dir.glob("checkpoints/*-last.ckpt")
    return torch.load(last, weights_only=False)["state_dict"]


def train_losses_after(run_dir: Path, step: int) -> list[tuple[int, float]]:
    return [(s, loss) for s, loss in logged(run_dir, "train_loss") if s > step]


def test_sigkill_then_the_same_command_resumes_bit_for_bit(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(command(straight), check=True, capture_output=True, timeout=600)

    job = subprocess.Popen(
        command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 300
    while not list(killed.glob("r/checkpoints/step=20-*-last.ckpt")) and time.time() < deadline:
        assert job.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert job.returncode == -signal.SIGKILL
    killed_at = max(step for step, _ in logged(killed / "r", "train_loss"))
    assert 19 <= killed_at < 59

    resumed = subprocess.run(command(killed), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    versions = sorted((killed / "r").glob("csv_logs/version_*/metrics.csv"))
    assert len(versions) == 2  # the killed run's log is kept; the resumed run adds its own
    resumed_rows = rows(versions[1], "train_loss")
    first_resumed_step = resumed_rows[0][0]
    # right after the newest complete checkpoint: step 10's when the kill lands inside the step-20 save (the file
    # is there, NeMo's unfinished mark too), else the one at 20 or later
    assert first_resumed_step in (10, 20, 30, 40, 50)
    assert resumed_rows == train_losses_after(straight / "r", first_resumed_step - 1)  # exact floats
    # the checkpoints the callback tracks, nothing stale from the killed run: the last and the best (each a file
    # and its context folder)
    assert len(list((killed / "r").glob("checkpoints/step=*.ckpt"))) == 2
    assert len(list((killed / "r").glob("checkpoints/*-last.ckpt"))) == 1
    a, b = final_weights(straight / "r"), final_weights(killed / "r")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    print(f"killed after step {killed_at}, resumed at step {first_resumed_step}; losses and weights identical")


def test_a_save_killed_midway_is_skipped_and_the_last_complete_checkpoint_is_used(tmp_path):
    run_dir = tmp_path / "r"
    subprocess.run(command(tmp_path, steps=20), check=True, capture_output=True, timeout=600)
    (good,) = run_dir.glob("checkpoints/*-last.ckpt")
    # what a kill during the step-30 save leaves: a truncated file, its context folder, and NeMo's unfinished mark
    broken = run_dir / "checkpoints" / "step=30-val_loss=0.0700-last"
    (broken / "context").mkdir(parents=True)
    broken.with_name(broken.name + ".ckpt").write_bytes(good.read_bytes()[:1000])
    broken.with_name(broken.name + "-unfinished").touch()
    time.sleep(0.01)
    os.utime(broken, None)  # the newest, so only the mark can rule it out

    resumed = subprocess.run(command(tmp_path, steps=30), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Restoring states from the checkpoint path at {good}" in resumed.stdout + resumed.stderr
    steps = [step for step, _ in logged(run_dir, "train_loss")]
    assert steps == list(range(30))  # steps 0-19, then 20-29 after the resume: none repeated, none lost


def past_step(run_dir: Path, step: int) -> bool:
    """Whether the run's last checkpoint is at ``step`` or later."""
    return any(checkpoint_step(p) >= step for p in run_dir.glob("checkpoints/step=*-last.ckpt"))


def test_two_runs_of_one_name_at_once_get_separate_directories(tmp_path):
    # long enough to outlive the second run's launch and start on a slow 2-core machine
    first = subprocess.Popen(command(tmp_path, steps=3000), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not past_step(tmp_path / "r", 30) and time.time() < deadline:
        time.sleep(0.05)  # the first run has claimed r/ and checkpointed past the second's 30 steps, still training
    # the second through the local executor, as a user runs it: the launcher's console says where it went
    second_command = [arg for arg in command(tmp_path, steps=30) if arg != "--direct"]
    second = subprocess.run(
        second_command, capture_output=True, text=True, timeout=600, env=dict(os.environ, COLUMNS="250")
    )
    first_out, _ = first.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, first_out[-2000:] + second.stderr[-2000:]
    # the second found r/ held by the first, still running: they overlapped
    assert f"note: {tmp_path / 'r'} was in use by a running job, so this run wrote {tmp_path / 'r-2'}" in second.stdout
    for run, steps in (("r", 3000), ("r-2", 30)):  # each a whole run of its own, its own last checkpoint
        assert [step for step, _ in logged(tmp_path / run, "train_loss")] == list(range(steps))
        assert len(list((tmp_path / run).glob("checkpoints/*-last.ckpt"))) == 1


def test_running_a_finished_run_again_is_refused_and_changes_nothing(tmp_path):
    subprocess.run(command(tmp_path, steps=20), check=True, capture_output=True, timeout=600)
    (last,) = (tmp_path / "r").glob("checkpoints/*-last.ckpt")
    weights = final_weights(tmp_path / "r")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for steps in (20, 10):  # before: 10 crashed in NeMo's sampler ("no samples left to consume") with a traceback
        again = subprocess.run(command(tmp_path, steps=steps), capture_output=True, text=True, timeout=600)
        assert again.returncode == 2, again.stderr[-3000:]
        assert f"{tmp_path / 'r'} has already trained 20 steps and trainer.max_steps={steps}" in again.stderr
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # not even an empty log
    assert [step for step, _ in logged(tmp_path / "r", "train_loss")] == list(range(20))  # no step trained twice
    assert [p.name for p in (tmp_path / "r" / "csv_logs").iterdir()] == ["version_0"]  # and no empty log added
    assert len(list((tmp_path / "r").glob("tb_logs/**/events.out.tfevents.*"))) == 1
    assert all(torch.equal(weights[k], v) for k, v in final_weights(tmp_path / "r").items())


def test_more_steps_after_a_finished_run_log_the_straight_runs_steps_and_losses(tmp_path):
    # before: the resumed rows came out labelled 9..18 for steps 10..19, and `compare` said "first at step 9"
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    subprocess.run(command(straight, steps=20), check=True, capture_output=True, timeout=600)
    subprocess.run(command(resumed, steps=10), check=True, capture_output=True, timeout=600)
    subprocess.run(command(resumed, steps=20), check=True, capture_output=True, timeout=600)
    assert [s for s, _ in logged(resumed / "r", "train_loss")] == list(range(20))
    same = subprocess.run([sys.executable, str(ROOT / "launch.py"), "compare", str(resumed / "r"), str(straight / "r")],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert same.returncode == 0 and "identical: 20 steps of train_loss, bit for bit" in same.stdout, same.stdout
    val = subprocess.run([sys.executable, str(ROOT / "launch.py"), "compare", str(resumed / "r"), str(straight / "r"),
                          "--column", "val_loss"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert val.returncode == 0, val.stdout
