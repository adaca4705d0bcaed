"""launch.py as a user runs it: a subprocess, jobs through NeMo-Run's LocalExecutor."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from launcher_cli import launch  # tests/e2e/launcher_cli.py

from megatron_mnist.run_logs import logged

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_dryrun_shows_config_and_command_without_training_or_heavy_imports(tmp_path):
    result = launch(
        "pretrain", "trainer.max_steps=50", f"log.log_dir={tmp_path}", "--dryrun", python_flags=("-X", "importtime")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "max_steps=50" in result.stdout
    assert "megatron_mnist.job.runner" in result.stdout  # the module the executor would start (job/runner.py)
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time")}
    assert not {"nemo.lightning", "megatron.core", "nemo.collections"} & imported
    assert not list(tmp_path.iterdir())  # nothing ran


LIGHT_LAUNCHER = """
import json, runpy, sys
sys.argv = ["launch.py", *json.loads(sys.argv[1])]
try:
    runpy.run_path("launch.py", run_name="__main__")
except SystemExit as e:
    assert not e.code, e.code
print("IMPORTED", json.dumps(sorted(m for m in ("torch", "leptonai", "numpy", "nemo.lightning") if m in sys.modules)))
"""


@pytest.mark.parametrize(
    "command",
    [
        # the dry run runs every pre-submit check first: the data folder's IDX files are read whole
        ["pretrain", "--dryrun", "data.root=src/megatron_mnist/data/sample"],
        ["check", "pretrain", "data.root=src/megatron_mnist/data/sample"],
        ["pipeline", "--dryrun"],
        ["--help"],
        ["list"],
    ],
)
def test_the_launcher_imports_neither_torch_nor_lepton_nor_numpy(command, tmp_path):
    # what makes it answer in about a second (benchmarks/launcher_latency.py): the performance issue's goal 4
    result = subprocess.run(
        [sys.executable, "-c", LIGHT_LAUNCHER, json.dumps([*command])],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=dict(os.environ, NEMORUN_HOME=str(tmp_path / "nemo_run")),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == "IMPORTED []"


def test_factory_arguments_and_dotted_overrides_compose():
    result = launch("pretrain", "--factory", "pretrain(name='wide', max_steps=70)", "model.hidden_size=256", "--dryrun")
    assert result.returncode == 0, result.stderr[-3000:]
    for expected in ("max_steps=70", "hidden_size=256", "name='wide'"):
        assert expected in result.stdout


def test_help_lists_the_recipes_and_their_knobs():
    top = launch("--help")
    assert top.returncode == 0 and all(name in top.stdout for name in ("pretrain", "finetune", "predict", "pipeline"))
    sub = launch("pretrain", "--help")
    assert sub.returncode == 0 and "--dryrun" in sub.stdout
    # ours, read from the recipe: every key with its type and default (NeMo-Run's took 15-29 s here, imported
    # NeMo's collections and showed inspect._empty for the fields)
    for row in ("trainer.max_steps", "int", "500", "trainer.loop", "lightning|megatron", "optim.lr", "0.001"):
        assert row in sub.stdout, row
    assert "inspect._empty" not in sub.stdout and "Cannot import zarr" not in sub.stdout + sub.stderr
    executors = sub.stdout.split("Executors")[1]
    assert all(name in executors for name in ("local", "docker", "slurm"))


def test_local_executor_trains_then_resumes_the_same_run(tmp_path):
    args = ["pretrain", f"log.log_dir={tmp_path}", "log.name=r", "trainer.val_check_interval=10", "--yes"]
    first = launch(*args, "trainer.max_steps=20")
    assert first.returncode == 0, first.stdout[-3000:]
    assert "SUCCEEDED" in first.stdout
    assert re.search(r"pretrain +[A-Z]+( \(finishing\))? +step \d+/20", first.stdout), first.stdout[-3000:]
    run_dir = tmp_path / "r"
    assert list(run_dir.glob("checkpoints/*step=20*-last.ckpt"))

    # environment variables of the user's: before, they replaced the PATH that makes the job run this interpreter,
    # and the job ran the system Python where the venv is not activated (as in CI)
    second = launch(*args, "trainer.max_steps=30", "executor.env_vars={'MNIST_MARK': 'x'}")
    assert second.returncode == 0, second.stdout[-3000:]
    steps = [step for step, _ in logged(run_dir, "train_loss")]
    assert max(steps) == 29 and sorted(set(steps)) == steps  # no step trained twice: it resumed at 20
    assert list(run_dir.glob("checkpoints/*step=30*-last.ckpt"))


def test_a_failing_job_fails_the_launcher_and_shows_its_log(tmp_path):
    bogus = tmp_path / "bogus.ckpt"  # exists (so the checks before launching pass), but is no checkpoint
    bogus.write_bytes(b"not a checkpoint")
    result = launch("finetune", f"model.initial_ckpt_path={bogus}", f"log.log_dir={tmp_path}", "--yes")
    assert result.returncode == 1
    assert "finetune: FAILED" in result.stdout
    assert f"cannot read checkpoint {bogus}" in result.stdout  # the job's log tail


def test_pipeline_runs_all_three_stages(tmp_path):
    result = launch(
        "pipeline", "--max-steps", "100", "--log-dir", str(tmp_path), "--yes", "pretrain.trainer.val_check_interval=50"
    )
    assert result.returncode == 0, result.stdout[-3000:]
    for stage in ("pretrain", "finetune", "predict"):
        assert f"{stage}: SUCCEEDED" in result.stdout
        assert f"  run: {tmp_path / 'pipeline' / stage}" in result.stdout  # the summary of each run, on the console
    assert (tmp_path / "pipeline" / "predict" / "predictions.pt").is_file()
    metrics = json.loads((tmp_path / "pipeline" / "predict" / "metrics.json").read_text())
    assert f"held-out accuracy {metrics['accuracy']:.4f} on 2000 digits" in result.stdout
    assert f"report: {tmp_path / 'pipeline' / 'predict' / 'report' / 'index.html'}" in result.stdout
    final_val = logged(tmp_path / "pipeline" / "pretrain", "val_loss")[-1][1]
    assert "steps: 100  train_loss" in result.stdout and f"val_loss {final_val:.4f}" in result.stdout
    assert "nemo experiment status" not in result.stdout  # NeMo-Run's hints for a CLI this package does not use
    assert "pynvml" not in result.stdout + result.stderr  # torch's import warning is no news to a user
    # on this machine the stages ran in one job (one start-up); as a job each, they train and predict the same
    assert "pipeline: the stages run in order in one job" in result.stdout
    assert re.search(r"pipeline +RUNNING +(pretrain|finetune|predict)", result.stdout), result.stdout[-3000:]
    separate = launch("pipeline", "--separate-jobs", "--name", "separate", "--max-steps", "100", "--log-dir",
                      str(tmp_path), "--yes", "pretrain.trainer.val_check_interval=50")  # fmt: skip
    assert separate.returncode == 0, separate.stdout[-3000:]
    assert "the stages run in order in one job" not in separate.stdout
    for stage in ("pretrain", "finetune"):
        for column in ("train_loss", "val_loss"):
            one, own = tmp_path / "pipeline" / stage, tmp_path / "separate" / stage
            assert logged(one, column) == logged(own, column), (stage, column)  # bit for bit
    predicted = json.loads((tmp_path / "separate" / "predict" / "metrics.json").read_text())
    assert predicted["accuracy"] == metrics["accuracy"]

    # the same pipeline again: its runs are finished, so nothing can continue; refused before anything runs
    # (before: pretrain and finetune died in NeMo's sampler, and predict then reported the old results as new)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    again = launch("pipeline", "--max-steps", "50", "--log-dir", str(tmp_path), "--yes")
    assert again.returncode == 2, again.stdout[-3000:] + again.stderr[-3000:]
    assert (
        f"{tmp_path / 'pipeline' / 'pretrain'} has already trained 100 steps and trainer.max_steps=50" in again.stderr
    )
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before  # nothing written

    # a stage that fails stops the pipeline: the later stages never run (before: predict ran on regardless)
    bogus = tmp_path / "bogus.ckpt"
    bogus.write_bytes(b"not a checkpoint")
    failed = launch("pipeline", "--name", "broken", "--max-steps", "20", "--log-dir", str(tmp_path), "--yes",
                    f"pretrain.model.initial_ckpt_path={bogus}")  # fmt: skip
    assert failed.returncode == 1, failed.stdout[-3000:]
    assert "pretrain: FAILED" in failed.stdout and f"cannot read checkpoint {bogus}" in failed.stdout
    for stage in ("finetune", "predict"):
        assert f"{stage}: NOT RUN (a stage before it did not succeed)" in failed.stdout, failed.stdout[-3000:]
        assert not (tmp_path / "broken" / stage).exists()


def test_a_recipe_exported_to_yaml_runs_and_trains_the_same(tmp_path):
    recipe = tmp_path / "pretrain.yaml"
    settings = ["trainer.max_steps=12", "trainer.val_check_interval=6", "trainer.log_every_n_steps=1",
                "trainer.accelerator=cpu", "model.hidden_size=32", f"log.log_dir={tmp_path}"]  # fmt: skip
    exported = launch("pretrain", *settings, "--to-yaml", str(recipe))
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert "hidden_size: 32" in recipe.read_text()
    # the long option: NeMo-Run binds -y both to --yaml and to --yes
    from_file = launch("pretrain", "--yaml", str(recipe), "log.name=from_yaml", "--yes")
    assert from_file.returncode == 0, from_file.stdout[-3000:] + from_file.stderr[-3000:]
    direct = launch("pretrain", *settings, "log.name=direct", "--yes")
    assert direct.returncode == 0, direct.stdout[-3000:]
    from_yaml, from_cli = logged(tmp_path / "from_yaml", "train_loss"), logged(tmp_path / "direct", "train_loss")
    assert len(from_yaml) == 12 and from_yaml == from_cli  # bit for bit
    wrong = launch("predict", "--yaml", str(recipe), "--yes")
    assert wrong.returncode == 2 and "not a recipe of megatron_mnist.job.api.predict" in wrong.stderr


def test_a_killed_local_job_is_failed_and_bad_task_names_are_one_line(tmp_path):
    import psutil

    title = f"killme{os.getpid()}"
    args = ["pretrain", "--name", title, f"log.log_dir={tmp_path}", "trainer.max_steps=100000", "--yes"]
    job = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.time() + 300
    while not list(tmp_path.glob("pretrain/csv_logs/version_0/metrics.csv")) and time.time() < deadline:
        time.sleep(0.2)
    tree = psutil.Process(job.pid).children(recursive=True) + [psutil.Process(job.pid)]
    for process in tree:  # the launcher and its job (NeMo-Run's local scheduler gives the job its own session)
        process.send_signal(signal.SIGKILL)
    psutil.wait_procs(tree, timeout=30)
    listed = launch("list", title)
    assert listed.returncode == 0 and title in listed.stdout, listed.stderr[-2000:]
    experiment = listed.stdout.split()[0]
    status = launch("status", experiment)
    # the task is named after the experiment (--name)
    assert status.returncode == 0 and f"{title}: FAILED" in status.stdout, status.stdout + status.stderr[-2000:]
    assert f"{title} FAILED" in listed.stdout and "started 20" in listed.stdout
    for command in ("logs", "cancel"):
        wrong = launch(command, experiment, "nosuch")
        assert wrong.returncode == 2, wrong.stdout + wrong.stderr
        assert f"experiment {experiment} has no task 'nosuch' (its tasks: {title})" in wrong.stderr
    assert f"== {title}:" in launch("logs", experiment, title).stdout


def _start(args: list[str], tmp_path) -> tuple[subprocess.Popen, list[str]]:
    """launch.py in a process group of its own (as a terminal runs it), its output collected line by line."""
    import threading

    job = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args], cwd=ROOT, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                           env=dict(os.environ, COLUMNS="250", MEGATRON_MNIST_PROGRESS_EVERY="1"))  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(job.stdout.readline, "")), daemon=True).start()
    return job, lines


def _trained_steps(run_dir, at_least: int, job, lines, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(len(p.read_text().splitlines()) > at_least for p in run_dir.glob("csv_logs/version_*/metrics.csv")):
            return
        assert job.poll() is None, "".join(lines[-40:])
        time.sleep(0.2)
    raise AssertionError("".join(lines[-40:]))


def test_ctrl_c_saves_stops_reports_cancelled_and_the_run_resumes_one_row_per_step(tmp_path):
    # before: one Ctrl-C showed ^C and the job ran to its end; two stopped it and `status` said SUCCEEDED
    args = [
        "pretrain",
        "--name",
        f"ctrlc{os.getpid()}",
        f"log.log_dir={tmp_path}",
        "log.name=r",
        "trainer.log_every_n_steps=1",
        "trainer.val_check_interval=1000",
        "trainer.enable_progress_bar=false",
    ]
    job, lines = _start([*args, "trainer.max_steps=100000", "--yes"], tmp_path)
    _trained_steps(tmp_path / "r", 30, job, lines)
    os.killpg(job.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends: the launcher's group, not the job's session
    assert job.wait(timeout=300) == 130, "".join(lines[-40:])
    time.sleep(0.5)
    output = "".join(lines)
    assert "Ctrl-C: asking " in output and "to save the last checkpoint and stop" in output, output[-3000:]
    (summary,) = [line for line in lines if line.startswith(f"ctrlc{os.getpid()}: ") and "job dir:" in line]
    assert summary.startswith(f"ctrlc{os.getpid()}: CANCELLED"), output[-3000:]
    experiment = next(line.split()[1].rstrip(":") for line in lines if line.startswith("experiment "))
    status = launch("status", experiment)
    assert "CANCELLED" in status.stdout and "SUCCEEDED" not in status.stdout, status.stdout
    (last,) = (tmp_path / "r").glob("checkpoints/*-last.ckpt")
    stopped_at = int(last.name.split("-")[0].removeprefix("step="))
    assert stopped_at >= 30
    # the same command, with room to train 10 more steps: one row per step, none repeated
    resumed = launch(*args, f"trainer.max_steps={stopped_at + 10}", "--yes")
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert [step for step, _ in logged(tmp_path / "r", "train_loss")] == list(range(stopped_at + 10))


def test_cancel_stops_a_running_local_job_and_says_so(tmp_path):
    title = f"cxl{os.getpid()}"
    args = ["pretrain", "--name", title, f"log.log_dir={tmp_path}", "log.name=r", "trainer.max_steps=100000",
            "trainer.enable_progress_bar=false", "--yes"]  # fmt: skip
    job, lines = _start(args, tmp_path)
    _trained_steps(tmp_path / "r", 3, job, lines)
    experiment = launch("list", title).stdout.split()[0]
    cancelled = launch("cancel", experiment)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert f"{title}: asked to save its last checkpoint and stop (SIGTERM)" in cancelled.stdout
    assert job.wait(timeout=300) == 1  # the launcher that waited on it: not a success
    time.sleep(0.5)
    assert any(line.startswith(f"{title}: CANCELLED") for line in lines), "".join(lines[-30:])
    assert list((tmp_path / "r").glob("checkpoints/*-last.ckpt"))  # it saved before it stopped
    again = launch("cancel", experiment)
    assert f"{title}: CANCELLED already, nothing to cancel" in again.stdout, again.stdout
