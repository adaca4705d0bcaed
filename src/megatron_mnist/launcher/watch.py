"""The launcher's live view of its tasks while it waits (and ``launch.py watch``): one line per task — its state
(Slurm's PENDING with the reason, RUNNING, requeued), step / max_steps, the latest train and val loss, steps/s and
the time left.

Read from what the job writes: ``progress.json`` in the task's job directory (``megatron_mnist.job.progress_file``),
and the scheduler's own word (Slurm's ``scontrol``), each read as the task's executor kind says (here, through the
mount, through the SSH tunnel) — no network service, so it works the same on every executor. On a terminal the
lines are redrawn in place; otherwise (CI, ``| tee``) a plain line per task is printed every
``MEGATRON_MNIST_PROGRESS_EVERY`` seconds (default 10).
"""

import json
import os
import subprocess
import sys
import threading
import time

import nemo_run as run
from nemo_run.core.frontend.console.api import CONSOLE
from rich.live import Live
from rich.text import Text
from torchx.specs import is_terminal

from megatron_mnist import executors
from megatron_mnist.executors.base import JobFolder, JobFolderUnreachable
from megatron_mnist.job_protocol import PROGRESS_ENV, PROGRESS_FILE


def attach(exp: run.Experiment) -> None:
    """Before the run: each task's job learns where to write its progress (an environment variable), as its
    executor kind places it."""
    for job in exp.jobs:
        job.executor.env_vars[PROGRESS_ENV] = executors.kind_of(job.executor).progress_path(job.executor)


class Reader:
    """Reads one experiment's tasks' progress files and their schedulers' word, each through its executor kind's
    :class:`~megatron_mnist.executors.base.JobFolder`."""

    def folder(self, executor) -> JobFolder:
        return executors.kind_of(executor).job_folder(executor)

    def progress(self, executor) -> dict:
        try:
            text = self.folder(executor).read(PROGRESS_FILE)
            return json.loads(text) if text.strip() else {}
        except (JobFolderUnreachable, ValueError):  # unreachable this round, or half written: the next poll tries
            return {}

    def live_state(self, job) -> dict:
        try:
            return executors.kind_of(job.executor).live_state(job, self.folder(job.executor))
        except (JobFolderUnreachable, subprocess.TimeoutExpired):
            return {}


def describe(name: str, state: str, progress: dict, live: dict) -> str:
    """One task's line: ``live`` is the scheduler's own word (``ExecutorKind.live_state``)."""
    words = [f"{name:<12}"]
    if live:
        state = live.get("state") or state
        restarts = live.get("restarts") or 0
        if state == "PENDING" and live.get("reason") not in (None, "None"):
            state = f"PENDING ({live['reason']})"
        if restarts:
            state = f"{state}, requeued {restarts}x"
    if progress.get("state") == "done" and state.startswith("RUNNING"):
        state = "RUNNING (finishing)"
    words.append(f"{state:<22}")
    if state.startswith("RUNNING"):
        if progress.get("stage"):  # a pipeline run as one job: which stage it is in
            words.append(progress["stage"])
        if not progress:  # the job's process is starting (Python, NeMo-Run), before it can write a word
            words.append("starting")
        elif progress.get("state") not in ("training", "done"):  # importing, loading its checkpoint, predicting...
            words.append(progress["state"])
    if progress.get("step") is not None and (state.startswith("RUNNING") or progress.get("state") == "done"):
        if progress.get("max_steps"):
            words.append(f"step {progress['step']}/{progress['max_steps']}")
        for key, label in (("train_loss", "train"), ("val_loss", "val")):
            if progress.get(key) is not None:
                words.append(f"{label} {progress[key]:.4f}")
        if progress.get("steps_per_s"):
            words.append(f"{progress['steps_per_s']:.1f} steps/s")
        if progress.get("eta_s") is not None and progress.get("state") != "done":
            words.append(f"{int(progress['eta_s']) // 60}:{int(progress['eta_s']) % 60:02d} left")
    return "  ".join(words)


class ProgressView:
    """A thread that redraws (terminal) or prints (otherwise) one line per task until stopped."""

    def __init__(self, exp: run.Experiment, states=None):
        self.exp, self.reader = exp, Reader()
        self.states = states  # (exp) -> {task: state}; default: launched tasks RUNNING, others waiting
        self.tty = sys.stdout.isatty()
        self.every = 1.0 if self.tty else float(os.environ.get("MEGATRON_MNIST_PROGRESS_EVERY", "10"))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._live = Live(Text(""), console=CONSOLE, refresh_per_second=4, transient=False) if self.tty else None

    def lines(self) -> list[str]:
        states = self.states(self.exp) if self.states else {}
        lines = []
        for job in self.exp.jobs:
            state = states.get(job.id) or ("RUNNING" if getattr(job, "launched", False) else "waiting")
            if getattr(job, "state", None) is not None and is_terminal(job.state):
                state = job.state.name  # NeMo-Run knows how it ended
            progress, live = self.reader.progress(job.executor), self.reader.live_state(job)
            lines.append(describe(job.id, state, progress, live))
        return lines

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self._show()

    def _show(self) -> None:
        try:
            lines = self.lines()
        except Exception as e:  # the view must never break a run
            lines = [f"(progress unavailable: {type(e).__name__}: {e})"]
        if self._live is not None:
            self._live.update(Text("\n".join(lines)))
        else:
            stamp = time.strftime("%H:%M:%S")
            for line in lines:
                print(f"[{stamp}] {line}", flush=True)

    def start(self) -> "ProgressView":
        if self._live is not None:
            self._live.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self._live is None:
            self._show()  # the last word of a log: each task's final step and losses, however short it ran
        else:
            self._live.update(Text(""))
            self._live.stop()
