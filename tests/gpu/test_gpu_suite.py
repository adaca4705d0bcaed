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
from functools import partial
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


ENGINES = {  # the pipeline and the resume chains run under each of these trainer settings
    "lightning": [],
    "megatron": ["--loop", "megatron"],
    "megatron-graph": ["--loop", "megatron", *(f"{s}.trainer.cuda_graph=true" for s in ("pretrain", "finetune"))],
}


def in_parallel(calls: dict):
    """Run each call in a thread of its own (launch.py runs are host-bound: the GPU runs several at once);
    their results by name, the first error raised."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(calls)) as pool:
        futures = {name: pool.submit(call) for name, call in calls.items()}
        return {name: future.result() for name, future in futures.items()}


def test_pipeline_on_one_gpu_under_each_engine(tmp_path):
    def pipeline(engine):
        launch("pipeline", "--name", engine, "--log-dir", str(tmp_path), *ENGINES[engine], "--yes", timeout=540)
        return metrics(tmp_path / engine / "predict")

    found = in_parallel({engine: partial(pipeline, engine) for engine in ENGINES})
    for engine, result in found.items():
        predictions = torch.load(tmp_path / engine / "predict" / "predictions.pt")
        print(f"one GPU, {engine}: held-out accuracy {result['accuracy']:.4f} on {result['num_digits']} digits")
        assert result["num_digits"] == 2000 and predictions["idx"].tolist() == list(range(2000))
        assert result["accuracy"] >= 0.8
        assert (tmp_path / engine / "predict" / "report" / "index.html").is_file()


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


def run_then_signal(args: list[str], run_dir: Path, after_step: int, sig: int) -> None:
    """``launch.py ARGS`` until the run has a last checkpoint at ``after_step`` or later, then ``sig`` to the whole
    tree (SIGKILL: as a crash; SIGTERM: as Slurm's preemption — the job saves and exits)."""
    job = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.time() + 300
    while max(last_checkpoint_steps(run_dir), default=0) < after_step and time.time() < deadline:
        assert job.poll() is None, "the run ended before the signal"
        time.sleep(0.05)
    if sig == signal.SIGKILL:
        kill_tree(job.pid)  # the launcher, the job and its children
    else:
        import psutil

        for child in psutil.Process(job.pid).children(recursive=True):  # the job (its own session), not the launcher
            child.send_signal(sig)
        job.wait(timeout=300)


# (engine settings, precision): the chains the resume test runs, side by side
CHAINS = {
    "lightning-bf16": ([], "bf16-mixed"),
    "lightning-32": ([], "32"),
    "megatron-bf16": (["trainer.loop=megatron"], "bf16-mixed"),
    "megatron-32": (["trainer.loop=megatron"], "32"),
    "graph-bf16": (["trainer.loop=megatron", "trainer.cuda_graph=true"], "bf16-mixed"),
}


def test_resume_is_bit_for_bit_after_more_steps_sigkill_and_sigterm(tmp_path):
    """Each chain: a straight 400-step run, against the same name run to 100 steps (finished), then the same
    command with max_steps=400 killed (SIGKILL) after its step-200 checkpoint, resumed and stopped (SIGTERM: saves)
    after step 300, resumed to its end: train and val losses bit for bit, final weights equal."""

    def chain(name):
        extra, precision = CHAINS[name]
        settings = [*extra, f"trainer.precision={precision}"]
        launch(*pretrain(tmp_path, f"{name}-straight", 400, *settings))
        launch(*pretrain(tmp_path, name, 100, *settings))
        run_then_signal(pretrain(tmp_path, name, 400, *settings), tmp_path / name, 200, signal.SIGKILL)
        run_then_signal(pretrain(tmp_path, name, 400, *settings), tmp_path / name, 300, signal.SIGTERM)
        launch(*pretrain(tmp_path, name, 400, *settings))
        return compare_runs(tmp_path / name, tmp_path / f"{name}-straight")

    for name, (train, val, weights) in in_parallel({name: partial(chain, name) for name in CHAINS}).items():
        print(f"one GPU, {name}: resumed 100 -> SIGKILL after 200 -> SIGTERM after 300 -> 400 against straight: "
              f"train_loss {train}, val_loss {val}, final weights {weights}")  # fmt: skip
        assert train == val == weights == "bit for bit", name


def test_graph_mode_equals_eager_and_resumes_either_way(tmp_path):
    eager, graph = ["trainer.loop=megatron"], ["trainer.loop=megatron", "trainer.cuda_graph=true"]

    def straight(name, settings, steps):
        launch(*pretrain(tmp_path, name, steps, *settings), timeout=540)

    def switched(name, first, then):
        launch(*pretrain(tmp_path, name, 200, *first))
        launch(*pretrain(tmp_path, name, 400, *then))

    in_parallel({
        "eager": partial(straight, "eager", eager, 2000), "graph": partial(straight, "graph", graph, 2000),
        "eager400": partial(straight, "eager400", eager, 400),
        "g2e": partial(switched, "g2e", graph, eager), "e2g": partial(switched, "e2g", eager, graph),
    })  # fmt: skip
    train, val, weights = compare_runs(tmp_path / "graph", tmp_path / "eager")
    print(f"one GPU, graph mode against eager over 2000 steps: train_loss {train}, val_loss {val}, weights {weights}")
    assert train == val == weights == "bit for bit"
    for name in ("g2e", "e2g"):
        result = compare_runs(tmp_path / name, tmp_path / "eager400")
        print(f"one GPU, {name} (200 steps one way, resumed to 400 the other) against eager: {result}")
        assert result == ("bit for bit",) * 3


def compare_runs(a: Path, b: Path) -> tuple[str, str, str]:
    """train_loss, val_loss and final weights of two runs: "bit for bit", or the largest relative difference."""
    from megatron_mnist.model.weights import load_model_weights

    found = []
    for column in ("train_loss", "val_loss"):
        la, lb = logged(a, column), logged(b, column)
        found.append("bit for bit" if la == lb else f"max rel diff {max_rel_diff(la, lb):.2e}")
    wa, wb = load_model_weights(a), load_model_weights(b)
    diff = max(((wa[k].float() - wb[k].float()).abs().max() / wb[k].float().abs().max()).item() for k in wa)
    found.append("bit for bit" if all(torch.equal(wa[k], wb[k]) for k in wa) else f"max rel diff {diff:.2e}")
    return tuple(found)


def test_logged_losses_are_read_back_without_waiting_for_the_gpu():
    """The megatron engine's LossReadback: pushing a log step's loss and polling for it make no call that waits for
    the GPU (torch's sync-debug mode raises on one: a .item(), a blocking or pageable copy, a synchronize), and
    the value comes back exact."""
    from megatron_mnist.job.megatron_engine import LossReadback

    readback = LossReadback(torch.device("cuda"))
    readback.push(0, torch.zeros((), device="cuda"))  # the first pinned allocation, outside the checked part
    assert readback.drain() == [(0, 0.0)]
    loss = torch.full((), 0.25, device="cuda")
    loss.mul_(3.0)
    polled = []
    torch.cuda.set_sync_debug_mode("error")
    try:
        with pytest.raises(RuntimeError):
            float(loss)  # the mode is on: what LossReadback replaced would raise here
        for step in (7, 12):
            readback.push(step, loss)
            polled += readback.ready()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    drained = readback.drain()
    print(f"polled without waiting: {polled}; drained: {drained}")
    assert polled + drained == [(7, 0.75), (12, 0.75)]


def test_distributed_adam_resume_gives_each_parameter_its_own_step():
    """The cause of the drifting GPU resumes, measured: megatron-core 0.15's DistributedOptimizer.load_state_dict
    (without Apex / TE) gives every parameter one shared ``step`` tensor, which torch's Adam then advances once
    per parameter per update. ``megatron_optim.make_resumable`` gives each its own again."""
    code = (
        "import json, sys, torch\n"
        "from megatron_mnist.job import builders, megatron_engine as me\n"
        "settings = builders.TrainerSettings('lightning', 'gpu', 'bf16-mixed', 1, 1, 10, 10, None, 1, False, 60,\n"
        "                                    False)\n"
        "me.init_process_group(settings, 1234)\n"
        "found = {}\n"
        "for fix in (False, True):\n"
        "    parts = me.build(builders.model_config('pretrain'), builders.Adam(), settings, 0, 1)\n"
        "    for group in parts.optimizer.param_groups:  # the Lightning engine's Adam (megatron-core's default)\n"
        "        group.update(capturable=False, fused=False, foreach=None)\n"
        "    state = parts.optimizer.state_dict()\n"
        "    inner = parts.optimizer.chained_optimizers[0]\n"
        "    if not fix: inner.load_state_dict = type(inner).load_state_dict.__get__(inner)\n"
        "    parts.optimizer.load_state_dict(state)\n"
        "    steps = [s['step'] for s in inner.optimizer.state.values()]\n"
        "    found[fix] = {'parameters': len(steps), 'step tensors': len({id(s) for s in steps})}\n"
        "print(json.dumps(found))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"after megatron-core loads the distributed optimizer: {found['false']} without the fix, {found['true']} "
          "with it")  # fmt: skip
    assert found["false"]["step tensors"] == 1 < found["false"]["parameters"]
    assert found["true"]["step tensors"] == found["true"]["parameters"]


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
