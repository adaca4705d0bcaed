"""A new executor kind is one module and one registry entry: a kind registered here, in this process, is what the
launcher submits with and follows the job up through — the live view, ``status``, ``watch`` and ``logs`` — and no
code of the launcher names it.

The kind runs its jobs with NeMo-Run's local executor (a real job, in a child process) and differs from
``executor=local`` in everything of its follow-up: its job folder says where it is as ``spool:PATH`` and counts the
reads, its logs are the job's stdout only, its scheduler's word counts restarts, its liveness check is its own.
"""

import dataclasses
import json
import re
import threading

import fiddle as fdl
import nemo_run as run
import pytest

from megatron_mnist import executors
from megatron_mnist.executors import local_machine
from megatron_mnist.executors.base import JobFolder
from megatron_mnist.launcher import experiments
from megatron_mnist.launcher.submission import submit
from megatron_mnist_recipes.pretrain import pretrain

pytestmark = pytest.mark.slow


class SpoolFolder(JobFolder):
    reads: list[str] = []  # what the launcher read through the kind's folder, in order

    @property
    def where(self) -> str:
        return f"spool:{self.path}"

    def read(self, name: str) -> str:
        self.reads.append(name)
        return super().read(name)

    def find(self, patterns) -> dict[str, str]:
        self.reads.append(" ".join(patterns))
        return super().find(patterns)


asked_alive = []


def spool_alive(job) -> bool:
    asked_alive.append(job.id)
    return local_machine.alive(job)


SPOOL = dataclasses.replace(
    executors.KINDS["local"],
    name="spool",
    job_folder=SpoolFolder,
    log_names=("stdout.log",),
    live_state=lambda job, folder: {"restarts": 2},
    alive=spool_alive,
)


def test_a_kind_registered_in_process_is_submitted_and_followed_up_through_its_own_module(
    tmp_path, monkeypatch, capsys
):
    # the registry's one entry: the local executor's class is now this kind's (executor=local is unregistered)
    monkeypatch.setattr(executors, "KINDS", {"spool": SPOOL})
    monkeypatch.setenv("MEGATRON_MNIST_PROGRESS_EVERY", "1")
    recipe = pretrain(name="spooled", log_dir=str(tmp_path), accelerator="cpu", max_steps=20)
    recipe.trainer.val_check_interval = 10
    recipe.trainer.enable_progress_bar = False
    results, earlier = {}, set(run.Experiment.catalog("spooled"))
    submitting = threading.Thread(target=lambda: results.update(
        submit(recipe, executor=fdl.build(executors.KINDS["spool"].factory()), name="spooled")))  # fmt: skip
    submitting.start()
    # while it runs: NeMo-Run's local scheduler answers RUNNING for a job whose launcher is gone too, so the kind's
    # liveness check is asked, and finds the job's processes
    seen = set()
    while submitting.is_alive():
        for experiment in set(run.Experiment.catalog("spooled")) - earlier:
            try:
                seen |= set(experiments.task_states(run.Experiment.from_id(experiment)).values())
            except (AssertionError, FileNotFoundError, ValueError):  # its folder is still being written
                pass
        submitting.join(timeout=0.5)
    assert "RUNNING" in seen and "spooled" in asked_alive
    submitted = capsys.readouterr().out

    (result,) = results.values()
    assert result.succeeded and result.summary["step"] == 20, submitted
    assert result.where == f"spool:{result.job_dir}"
    assert "progress.json" in SpoolFolder.reads and "stdout.log" in SpoolFolder.reads  # the view, the summary
    assert "requeued 2x" in submitted and "step 20/20" in submitted  # the view's last line: the kind's word
    experiment = re.search(r"^experiment (\S+): ", submitted, re.M)[1]

    experiments.status(experiment)
    status = capsys.readouterr().out
    assert "spooled: SUCCEEDED  job id: " in status and f"job dir: spool:{result.job_dir}" in status

    with pytest.raises(SystemExit) as watched:
        experiments.watch(experiment, every=1)
    out = capsys.readouterr().out
    assert watched.value.code == 0, out
    assert f"spooled: SUCCEEDED  job dir: spool:{result.job_dir}" in out and "steps: 20" in out

    experiments.logs(experiment, None)
    logs = capsys.readouterr().out
    headers = [line for line in logs.splitlines() if line.startswith("== spooled: ")]
    assert headers and all(line.endswith("stdout.log") for line in headers), logs  # the kind's log names only
    result_line = next(line for line in logs.splitlines() if "megatron_mnist result: " in line)
    assert json.loads(result_line.split("megatron_mnist result: ", 1)[1])["step"] == 20
