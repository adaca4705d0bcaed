"""Bad input stops the launcher before anything runs: one line naming the value and what was expected, status 2."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def launch(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=dict(os.environ, COLUMNS="200"),
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["pretrain", "trainer.max_step=5"],
            "unknown override key 'trainer.max_step': did you mean trainer.max_steps?",
        ),
        (["pretrain", "trainer.max_steps=abc"], "trainer.max_steps='abc' is not an integer"),
        (["pretrain", "trainer.accelerator=tpu"], "trainer.accelerator='tpu' is not one of auto, gpu, cpu"),
        (["pretrain", "data.micro_batch_size=0"], "data.micro_batch_size=0 must be a positive integer"),
        (["pretrain", "trainer.max_steps=-3"], "trainer.max_steps=-3 must be a positive integer"),
        (["pretrain", "optim.lr=0"], "optim.lr=0.0 must be positive"),
        (
            ["pretrain", "data.micro_batch_size=32", "data.global_batch_size=48"],
            "data.global_batch_size=48 is not a multiple of data.micro_batch_size=32 × 1 data-parallel rank(s)",
        ),
        (
            ["pretrain", "executor.ntasks_per_node=2", "data.micro_batch_size=32", "data.global_batch_size=32"],
            "data.global_batch_size=32 is not a multiple of data.micro_batch_size=32 × 2 data-parallel rank(s)",
        ),
        (
            ["finetune", "model.initial_ckpt_path=/no/such/run"],
            "model.initial_ckpt_path='/no/such/run': checkpoint not found: /no/such/run",
        ),
        (["finetune", f"model.initial_ckpt_path={ROOT / 'tests'}"], "is not a checkpoint"),
        (["pretrain", "data.root=/tmp/no-mnist-here"], "data.root='/tmp/no-mnist-here' is not a directory"),
        (["pretrain", f"data.root={ROOT / 'tests'}"], "MNIST file not found"),
        (["pretrain", "--name", "a b"], "--name='a b' is not a valid job name"),
        (
            ["predict", f"model.initial_ckpt_path={ROOT / 'tests' / 'fixtures' / 'gpu_resumed_checkpoint'}"],
            "holds a PretrainConfig model without digit_classifier, which model.task=finetune takes from it",
        ),
        (["pretrain", "trainer.devices=2"], "trainer.devices=2 but the executor starts 1 (executor.ntasks_per_node)"),
        (["pretrain", "runtime=120"], "unknown override key 'runtime'"),  # not mistaken for run.* (Run#604)
        (["pipeline", "--yes", "pretrain.trainer.max_stepz=1"], "pretrain: unknown override key 'trainer.max_stepz'"),
        (["pipeline", "--yes", "train.x=1"], "expected STAGE.KEY=VALUE with STAGE one of pretrain, finetune, predict"),
    ],
)
def test_one_clear_line_and_nothing_runs(args, message, tmp_path):
    result = launch(
        *args,
        f"log.log_dir={tmp_path}" if args[0] != "pipeline" else "--log-dir",
        *([] if args[0] != "pipeline" else [str(tmp_path)]),
        "--yes",
    )
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert not list(tmp_path.iterdir())  # nothing written


def test_gpus_asked_where_there_are_none(tmp_path):
    if Path("/dev/nvidiactl").exists():
        pytest.skip("this machine has a GPU")  # CI machines have none: there the test runs
    result = launch("pretrain", "trainer.accelerator=gpu", f"log.log_dir={tmp_path}", "--yes")
    assert result.returncode == 2
    assert "trainer.accelerator=gpu but the job would get no GPU" in result.stderr


def test_an_unknown_recipe():
    result = launch("pretrian", "--yes")
    assert result.returncode == 2
    assert "No such command 'pretrian'" in result.stderr


def test_skip_checks_submits_what_the_checks_would_have_stopped(tmp_path):
    args = ["pretrain", "data.root=/tmp/no-mnist-here", "trainer.accelerator=cpu", f"log.log_dir={tmp_path}", "--yes"]
    checked = launch(*args)
    assert checked.returncode == 2 and "data.root='/tmp/no-mnist-here' is not a directory" in checked.stderr
    skipped = launch(*args, "--skip-checks")
    # submitted: the job itself meets the problem and fails (status 1), with its log tail
    assert skipped.returncode == 1, skipped.stdout[-2000:] + skipped.stderr[-2000:]
    output = skipped.stdout + skipped.stderr
    assert "pretrain: FAILED" in output and "data.root=/tmp/no-mnist-here is not a directory" in output
