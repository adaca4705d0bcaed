"""The launcher's live view of its tasks while it waits (and ``launch.py watch``): one line per task — its state
(Slurm's PENDING with the reason, RUNNING, requeued), step / max_steps, the latest train and val loss, steps/s and
the time left.

Read from what the job writes: ``progress.json`` in the task's job directory (``megatron_mnist.job.progress_file``),
read here or through the SSH tunnel, and Slurm's own ``scontrol`` — no network service, so it works the same on
every executor. On a terminal the lines are redrawn in place; otherwise (CI, ``| tee``) a plain line per task is
printed every ``MEGATRON_MNIST_PROGRESS_EVERY`` seconds (default 10).
"""

import json
import os
import re
import subprocess
import sys
import threading
import time

import nemo_run as run
from nemo_run.core.frontend.console.api import CONSOLE
from rich.live import Live
from rich.text import Text
from torchx.specs import is_terminal

from megatron_mnist.executors.slurm_cluster import slurm_job_id
from megatron_mnist.job_protocol import CONTAINER_JOB_DIR, PROGRESS_ENV, PROGRESS_FILE


def _tunnel(executor):
    tunnel = getattr(executor, "tunnel", None)
    return tunnel if isinstance(tunnel, run.SSHTunnel) else None


def remote_job_dir(executor) -> str:
    """The task's folder on the login node: NeMo-Run's layout there is TUNNEL_JOB_DIR/TITLE/ID/TASK."""
    return f"{executor.tunnel.job_dir}/{os.path.basename(executor.job_dir)}"


def progress_path_for_job(executor) -> str:
    """The progress file as the job sees it."""
    if isinstance(executor, run.DockerExecutor):
        return f"{CONTAINER_JOB_DIR}/{PROGRESS_FILE}"
    if _tunnel(executor):
        return f"{remote_job_dir(executor)}/{PROGRESS_FILE}"
    return os.path.join(executor.job_dir, PROGRESS_FILE)


def attach(exp: run.Experiment) -> None:
    """Before the run: each task's job learns where to write its progress (an environment variable)."""
    for job in exp.jobs:
        job.executor.env_vars[PROGRESS_ENV] = progress_path_for_job(job.executor)


class Reader:
    """Reads progress files and Slurm states for one experiment's tasks; its own SSH connection (the waiting
    threads of NeMo-Run use theirs)."""

    def __init__(self):
        self._tunnels: dict[str, run.SSHTunnel] = {}

    def _run(self, executor, command: str) -> str:
        tunnel = _tunnel(executor)
        if tunnel is None:
            result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30)
            return result.stdout
        key = f"{tunnel.user}@{tunnel.host}:{tunnel.port}"
        if key not in self._tunnels:
            own = run.SSHTunnel(host=tunnel.host, user=tunnel.user, port=tunnel.port, identity=tunnel.identity,
                                job_dir=tunnel.job_dir)  # fmt: skip
            own.connect()
            self._tunnels[key] = own
        return self._tunnels[key].run(command, hide=True, warn=True).stdout

    def progress(self, executor) -> dict:
        try:
            if _tunnel(executor):
                text = self._run(executor, f"cat {remote_job_dir(executor)}/{PROGRESS_FILE} 2>/dev/null")
            else:
                path = os.path.join(executor.job_dir, PROGRESS_FILE)
                text = open(path).read() if os.path.exists(path) else ""
            return json.loads(text) if text.strip() else {}
        except Exception:  # not written yet, half written, a timeout, an SSH hiccup (paramiko's own errors): no
            return {}  # progress this round, the next poll tries again

    def slurm(self, executor, job_id: str) -> dict:
        """JobState, Reason and Restarts of a Slurm job ({} once Slurm has forgotten it)."""
        try:
            text = self._run(executor, f"scontrol -o show job {job_id} 2>/dev/null")
        except Exception:
            return {}
        return dict(re.findall(r"\b(JobState|Reason|Restarts)=(\S+)", text))


def describe(name: str, state: str, progress: dict, slurm: dict) -> str:
    """One task's line."""
    words = [f"{name:<12}"]
    if slurm:
        state = slurm.get("JobState", state)
        restarts = int(slurm.get("Restarts", "0") or 0)
        if state == "PENDING" and slurm.get("Reason") not in (None, "None"):
            state = f"PENDING ({slurm['Reason']})"
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
            slurm = {}
            if isinstance(job.executor, run.SlurmExecutor) and (job_id := slurm_job_id(job)):
                slurm = self.reader.slurm(job.executor, job_id)
            lines.append(describe(job.id, state, self.reader.progress(job.executor), slurm))
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
