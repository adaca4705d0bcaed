"""The launcher's line per task, from the progress file a job writes; a pipeline run as one job, read back per stage."""

import json

from megatron_mnist.job.progress_file import ProgressWriter, note
from megatron_mnist.job_protocol import PROGRESS_ENV, RESULT_MARK, STAGE_ENV, STAGE_MARK
from megatron_mnist.launcher.submission import result_in, stage_logs
from megatron_mnist.launcher.watch import describe


def test_a_starting_job_says_what_it_does_then_its_stage_and_steps(tmp_path, monkeypatch):
    path = tmp_path / "progress.json"
    monkeypatch.setenv(PROGRESS_ENV, str(path))
    assert describe("pipeline", "RUNNING", {}, {}).split() == ["pipeline", "RUNNING", "starting"]

    note("importing")  # what job/__init__ writes before the training stack loads
    progress = json.loads(path.read_text())
    assert progress["state"] == "importing" and progress["step"] is None and progress["steps_per_s"] is None
    assert describe("pipeline", "RUNNING", progress, {}).split() == ["pipeline", "RUNNING", "importing"]

    monkeypatch.setenv(STAGE_ENV, "finetune")  # api.in_one_process names the stage the steps are of
    writer = ProgressWriter(str(path))
    writer.write("training", 10, 100, 0.5, None)
    writer.write("training", 20, 100, 0.25, 0.3)
    line = describe("pipeline", "RUNNING", json.loads(path.read_text()), {})
    assert line.split()[:5] == ["pipeline", "RUNNING", "finetune", "step", "20/100"]
    assert "train 0.2500" in line and "val 0.3000" in line and "steps/s" in line
    # once ended, the state is the task's: no stage, no "starting"
    assert "finetune" not in describe("pipeline", "SUCCEEDED", json.loads(path.read_text()), {})


def test_note_writes_nothing_where_the_launcher_asked_for_no_progress(tmp_path, monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    note("importing")
    assert list(tmp_path.iterdir()) == []


def test_a_one_job_pipelines_log_is_read_back_per_stage(tmp_path):
    result = {"run_dir": "/runs/pipeline/pretrain", "step": 20, "max_steps": 20, "train_loss": 0.1}
    log = "".join([
        "NeMo-Run's own lines\n",
        f"{STAGE_MARK}pretrain\n",
        "training...\n",
        f"{RESULT_MARK}{json.dumps(result)}\n",
        f"{STAGE_MARK}finetune\n",
        "Traceback (most recent call last):\n",
    ])  # fmt: skip
    parts = stage_logs({str(tmp_path / "log-pipeline.out"): log})
    assert list(parts) == ["pretrain", "finetune"]  # predict never started: NOT RUN
    assert result_in(tmp_path, [parts["pretrain"]]) == result
    assert result_in(tmp_path, [parts["finetune"]]) == {}  # it died: FAILED
