"""The README's Python blocks run as written, as scripts (a user copies them into a file)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def run_script(code: str, folder: Path) -> subprocess.CompletedProcess:
    script = folder / "user_script.py"
    script.write_text(code)
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200")
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=folder, env=env
    )


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_block_runs_once_and_prints_its_result(index, tmp_path):
    experiments = Path(os.environ["NEMORUN_HOME"]) / "experiments" / "from_python"
    before = set(experiments.glob("from_python_*"))
    result = run_script(python_blocks()[index], tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert float(result.stdout.strip().splitlines()[-1]) > 0  # the val loss the summary carries
    assert len(set(experiments.glob("from_python_*")) - before) == 1  # one experiment: the script ran once
    assert [p.name for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")] == ["from_python"]
    assert [p.name for p in (tmp_path / "runs" / "from_python" / "csv_logs").iterdir()] == ["version_0"]
    # the same script again: the run is finished, so submit refuses before anything runs (SubmissionError)
    again = run_script(python_blocks()[index], tmp_path)
    assert again.returncode == 1 and "SubmissionError" in again.stderr, again.stderr[-2000:]
    assert "has already trained 20 steps and trainer.max_steps=20" in again.stderr


def test_submit_raises_on_bad_input_and_on_a_failed_task(tmp_path):
    code = """
from megatron_mnist import SubmissionError, TaskFailed, submit
from megatron_mnist_recipes.pretrain import pretrain

if __name__ == "__main__":
    r = pretrain()
    r.data.root = "/nope"
    try:
        submit(r)
    except SubmissionError as e:
        print("refused:", e)
    try:
        submit(r, skip_checks=True)  # the job meets the problem itself
    except TaskFailed as e:
        print("failed:", e.results["pretrain"].state)
"""
    result = run_script(code, tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "refused: data.root='/nope' is not a directory" in result.stdout
    assert "failed: FAILED" in result.stdout
