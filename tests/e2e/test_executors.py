"""One recipe, unchanged, on the local executor, a real Slurm cluster (local and SSH tunnel) and a real Docker engine.

The engines are the project's own (tests/infra/*_up.sh, started by .ci/run and, idempotently, by these fixtures).
"""

import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from launcher_cli import launch, launch_env  # tests/e2e/launcher_cli.py

from megatron_mnist.run_logs import logged

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "tests" / "infra"
IMAGE = "local/debian-python:bookworm"
FAST = ["trainer.max_steps=20", "trainer.val_check_interval=10", "trainer.enable_progress_bar=false", "--yes"]

pytestmark = pytest.mark.slow


def sh(*args, check=True, timeout=600):
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=timeout)


@pytest.fixture(scope="session")
def slurm():
    sh("bash", str(INFRA / "slurm_up.sh"), timeout=900)
    return ["executor=slurm", "executor.partition=debug", "executor.time=00:10:00"]


@pytest.fixture(scope="session")
def docker():
    sh("bash", str(INFRA / "docker_up.sh"), timeout=900)
    return ["executor=docker", f"executor.image={IMAGE}", f"executor.python_env={sys.prefix}"]


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("sshd"))
    yield sh("bash", str(INFRA / "sshd_up.sh"), "2222", folder).stdout.split()[-1]
    sh("bash", str(INFRA / "sshd_down.sh"), "2222", folder)  # the machine as it was: no sshd, no host key


def job_dir_of(stdout: str, task: str) -> Path:
    line = next(line for line in stdout.splitlines() if line.startswith(f"{task}: ") and "job dir:" in line)
    return Path(line.split("job dir:")[1].strip())


def experiment_id_of(stdout: str) -> str:
    # launch.py prints "experiment ID: DIR" (NeMo-Run's own hints print "experiment = run.Experiment...")
    return next(m.group(1) for m in map(re.compile(r"^experiment (\S+): ").match, stdout.splitlines()) if m)


def squeue_ids() -> list[str]:
    return sh("squeue", "-h", "-o", "%i").stdout.split()


def sacct_state(job_id: str) -> tuple[str, str]:
    out = sh("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,ExitCode").stdout.strip().splitlines()
    state, exit_code = out[0].split("|")
    return state, exit_code


def slurm_job_ids(job_dir: Path) -> list[str]:
    # sbatch_<name>_<JOBID>.out
    return sorted({p.stem.rsplit("_", 1)[1] for p in job_dir.glob("sbatch_*.out")})


def assert_trained(run_dir: Path):
    assert list(run_dir.glob("checkpoints/*-last.ckpt")), f"no checkpoint in {run_dir}"
    assert max(step for step, _ in logged(run_dir, "train_loss")) == 19


# -- the recipe runs ------------------------------------------------------------------------------------------------
def test_slurm_local_tunnel_runs_the_recipe_and_lands_logs_and_checkpoint_in_the_job_dir(slurm):
    result = launch("pretrain", *slurm, *FAST)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    job_dir = job_dir_of(result.stdout, "pretrain")
    assert_trained(job_dir / "code" / "runs" / "pretrain")
    assert "megatron_mnist at" in (job_dir / "SOURCE.txt").read_text()  # which code ran
    (job_id,) = slurm_job_ids(job_dir)
    assert sacct_state(job_id) == ("COMPLETED", "0:0")
    assert "Trainer.fit` stopped: `max_steps=20` reached" in next(job_dir.glob("log-*.out")).read_text()


def test_slurm_over_an_ssh_tunnel(slurm, ssh_key, tmp_path):
    remote = tmp_path / "cluster_jobs"
    result = launch(
        "pretrain",
        *slurm,
        "executor.tunnel=ssh",
        "executor.host=127.0.0.1",
        "executor.user=root",
        "executor.port=2222",
        f"executor.identity={ssh_key}",
        f"executor.job_dir={remote}",
        f"executor.python_env={sys.prefix}",
        *FAST,
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    run_dirs = list(remote.glob("**/code/runs/pretrain"))  # rsynced to the "login node", run there
    assert len(run_dirs) == 1
    assert_trained(run_dirs[0])
    # the console names the job directory on the cluster, and the run's summary read from there
    assert f"pretrain: SUCCEEDED  job dir: 127.0.0.1:{remote}/" in result.stdout, result.stdout[-3000:]
    assert f"  run: {run_dirs[0]}  steps: 20" in result.stdout
    assert re.search(r"pretrain +[A-Z]+( \(finishing\))? +step \d+/20", result.stdout)  # read through the tunnel
    logs = launch("logs", experiment_id_of(result.stdout))  # read through the tunnel
    assert logs.returncode == 0 and "max_steps=20` reached" in logs.stdout, logs.stdout[-2000:] + logs.stderr[-2000:]


def test_docker_runs_the_recipe_with_checkpoint_and_logs_on_the_host(docker):
    result = launch("pretrain", *docker, "executor.shm_size=1g", "executor.env={'MNIST_MARK': 'x'}", *FAST)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    job_dir = job_dir_of(result.stdout, "pretrain")
    assert_trained(job_dir / "code" / "runs" / "pretrain")
    status = json.loads(next(job_dir.glob("status_*.out")).read_text())
    assert status["exit_code"] == "0"


def test_the_same_seed_gives_the_same_losses_on_local_slurm_and_docker(slurm, docker, tmp_path):
    losses, run_dirs = {}, {}
    for name, executor in (("local", ["executor=local"]), ("slurm", slurm), ("docker", docker)):
        # local: a fresh folder of ours; slurm and docker: the default relative log_dir, inside their job dir
        where = [f"log.log_dir={tmp_path}"] if name == "local" else []
        result = launch("pretrain", *executor, *FAST, "log.name=seeded", *where)
        assert result.returncode == 0, name + result.stdout[-2000:]
        job_dir = job_dir_of(result.stdout, "pretrain")
        run_dir = tmp_path / "seeded" if name == "local" else job_dir / "code" / "runs" / "seeded"
        losses[name], run_dirs[name] = [loss for _, loss in logged(run_dir, "train_loss")], run_dir
    assert len(losses["local"]) == 4 and losses["local"] == losses["slurm"] == losses["docker"], losses
    same = launch("compare", str(run_dirs["local"]), str(run_dirs["docker"]))
    assert same.returncode == 0 and "identical: 4 steps of train_loss, bit for bit" in same.stdout
    other = launch("compare", str(run_dirs["local"]), str(ROOT / "tests" / "fixtures"))
    assert other.returncode == 1 and "no train_loss logged" in other.stdout


# -- dry runs: what would be submitted, without submitting or importing the training stack --------------------------
def test_slurm_dryrun_prints_the_sbatch_script_with_the_gpu_request(slurm):
    before = squeue_ids()
    started = time.perf_counter()
    result = launch("pretrain", *slurm, "executor.gpus_per_node=2", "--dryrun")
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-2000:]
    for line in (
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --partition=debug",
        "#SBATCH --time=00:10:00",
        f"source {sys.prefix}/bin/activate",
        "megatron_mnist.job.runner",  # NeMo-Run's job runner, started by ours (job/runner.py)
    ):
        assert line in result.stdout, line
    assert "code: megatron_mnist at" in result.stdout
    # the script as sbatch gets it, not wrapped to a terminal's width (stdout is a pipe here)
    srun = [line for line in result.stdout.splitlines() if line.startswith("srun --output")]
    assert len(srun) == 1 and "megatron_mnist.job.runner" in srun[0], result.stdout[-3000:]
    assert "--kill-on-bad-exit=1" in srun[0], result.stdout[-3000:]
    assert squeue_ids() == before
    print(f"slurm dry run: {elapsed:.1f} s")


def test_docker_dryrun_prints_the_container_spec(docker):
    result = launch(
        "pretrain",
        *docker,
        "executor.num_gpus=1",
        "executor.shm_size=2g",
        "executor.volumes=['/tmp:/host_tmp:ro']",
        "executor.env={'MNIST_MARK': 'x'}",
        "--dryrun",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for text in (
        f"container_image: {IMAGE}",
        "num_gpus: 1",
        "shm_size: 2g",
        f"{sys.prefix}:{sys.prefix}:ro",
        "/tmp:/host_tmp:ro",
        "MNIST_MARK: x",
    ):
        assert text in result.stdout, text


# -- failures are failures ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("executor", ["local", "slurm", "docker"])
def test_a_failing_task_is_failed_with_its_log_tail(executor, request, tmp_path):
    # a file that passes the checks made before submitting (it exists) but fails in the job (it is no checkpoint)
    bogus = tmp_path / "bogus.ckpt"
    bogus.write_bytes(b"not a checkpoint")
    args = {"local": ["executor=local"]}.get(executor) or request.getfixturevalue(executor)
    if executor == "docker":
        args = [*args, f"executor.volumes=['{tmp_path}:{tmp_path}:ro']"]
    result = launch("finetune", *args, f"model.initial_ckpt_path={bogus}", "--yes")
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "finetune: FAILED" in result.stdout
    if executor != "local":  # the local scheduler keeps no exit status on disk
        assert "finetune: FAILED (exit code 1)" in result.stdout
    assert f"cannot read checkpoint {bogus}" in result.stdout  # the job's own log, shown
    if executor == "slurm":
        (job_id,) = slurm_job_ids(job_dir_of(result.stdout, "finetune"))
        assert sacct_state(job_id) == ("FAILED", "1:0")


# -- experiments ----------------------------------------------------------------------------------------------------
def test_pipeline_on_slurm_as_dependent_jobs(slurm, tmp_path):
    result = launch(
        "pipeline",
        *slurm,
        "--max-steps",
        "30",
        "--log-dir",
        str(tmp_path),
        "--detach",
        "--yes",
        "pretrain.trainer.val_check_interval=10",
        "finetune.trainer.val_check_interval=10",
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    experiment = experiment_id_of(result.stdout)
    deps = sh("squeue", "-h", "-o", "%j %E").stdout
    assert "afterok" in deps  # finetune and predict wait on the stage before
    deadline = time.time() + 600
    while time.time() < deadline:
        status = launch("status", experiment).stdout
        if status.count("SUCCEEDED") == 3 or "FAILED" in status:
            break
        time.sleep(5)
    assert status.count("SUCCEEDED") == 3, status
    metrics = json.loads((tmp_path / "pipeline" / "predict" / "metrics.json").read_text())
    assert metrics["num_digits"] == 2000 and metrics["accuracy"] > 0.1
    logs = launch("logs", experiment, "predict").stdout
    assert "held-out accuracy" in logs


def test_pipeline_on_slurm_in_one_allocation(slurm, tmp_path):
    fast = ["pretrain.trainer.val_check_interval=10", "finetune.trainer.val_check_interval=10"]
    result = launch("pipeline", *slurm, "--one-job", "--max-steps", "20", "--log-dir", str(tmp_path), "--detach",
                    "--yes", *fast)  # fmt: skip
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    experiment = experiment_id_of(result.stdout)
    (job_id,) = slurm_job_ids_from_status(experiment)  # one job, one queue wait, for the three stages
    watched = launch("watch", experiment, "--every", "1", timeout=900)
    assert watched.returncode == 0, watched.stdout[-4000:] + watched.stderr[-2000:]
    for stage in ("pretrain", "finetune", "predict"):  # each stage's result, read from its part of the job's log
        assert f"{stage}: SUCCEEDED  job dir:" in watched.stdout, watched.stdout[-4000:]
    assert f"run: {tmp_path / 'pipeline' / 'finetune'}  steps: 20" in watched.stdout
    assert "held-out accuracy" in watched.stdout
    assert sacct_state(job_id) == ("COMPLETED", "0:0")


@pytest.mark.parametrize("executor", ["local", "slurm"])
def test_sweep_runs_a_task_per_combination_and_tabulates_val_loss(executor, request, tmp_path):
    args = ["executor=local"] if executor == "local" else request.getfixturevalue(executor)
    result = launch(
        "pretrain", *args, "--sweep", "optim.lr=1e-2,1e-4", "data.micro_batch_size=16,32", f"log.log_dir={tmp_path}",
        *FAST,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    with open(tmp_path / "pretrain" / "sweep.csv") as f:
        table = list(csv.DictReader(f))
    combos = [(r["optim.lr"], r["data.micro_batch_size"]) for r in table]
    assert combos == [("1e-2", "16"), ("1e-2", "32"), ("1e-4", "16"), ("1e-4", "32")]
    for row in table:  # each task trained with its own settings, and the table holds its logged val loss
        run_dir = tmp_path / "pretrain" / row["task"]
        assert float(row["final_val_loss"]) == logged(run_dir, "val_loss")[-1][1]
        assert_trained(run_dir)
    assert len({row["final_val_loss"] for row in table}) == 4
    if executor == "slurm":
        ids = [i for name in ("pretrain-0", "pretrain-3") for i in slurm_job_ids(job_dir_of(result.stdout, name))]
        assert all(sacct_state(i) == ("COMPLETED", "0:0") for i in ids)


def test_cancel_really_cancels_a_slurm_job(slurm):
    result = launch("pretrain", *slurm, "trainer.max_steps=100000", "log.name=long", "--yes", "--detach")
    assert result.returncode == 0, result.stdout[-3000:]
    experiment = experiment_id_of(result.stdout)
    (job_id,) = slurm_job_ids_from_status(experiment)
    assert job_id in squeue_ids()
    cancelled = launch("cancel", experiment)
    assert cancelled.returncode == 0, cancelled.stdout
    deadline = time.time() + 60
    while job_id in squeue_ids() and time.time() < deadline:
        time.sleep(1)
    assert job_id not in squeue_ids()
    assert sacct_state(job_id)[0] == "CANCELLED" or sacct_state(job_id)[0].startswith("CANCELLED")


def slurm_job_ids_from_status(experiment: str) -> list[str]:
    status = launch("status", experiment).stdout
    return [line.split("job id:")[1].split()[0] for line in status.splitlines() if "job id:" in line]


def test_list_status_and_unknown_experiment(slurm):
    listed = launch("list").stdout
    assert "pretrain_" in listed
    missing = launch("status", "nope_123")
    assert missing.returncode == 2 and "experiment 'nope_123' not found" in missing.stderr


# -- bad input: one clear line, nothing submitted -------------------------------------------------------------------
def docker_containers() -> list[str]:
    return sh("docker", "ps", "-a", "-q").stdout.split()


@pytest.mark.parametrize(
    "args, message",
    [
        (["executor=k8s"], "executor='k8s' is not one of local, docker, slurm"),
        (
            ["executor.partition=gpu-nope"],
            "executor.partition='gpu-nope' does not exist on the cluster (partitions: debug, multi)",
        ),
        (["executor.gpus_per_node=4"], "executor.gpus_per_node=4 but partition debug has at most 2 GPU(s) per node"),
        (["executor.job_dir=/proc/not-here"], "executor.job_dir='/proc/not-here' is not writable on this machine"),
        (["executor.nodes=3"], "executor.nodes=3 but partition debug has 1 node(s): the job would pend forever"),
        (["executor.time=banana"], "executor.time='banana' is not allowed: expected a Slurm time limit"),
        (["executor.python_env=/nope"], "executor.python_env='/nope' is not a virtual environment on this machine"),
        (["executor.account=a$(touch pwned)"], "executor.account='a$(touch pwned)' is not allowed"),
        (["executor.job_dir=/tmp/$(touch pwned)"], "executor.job_dir='/tmp/$(touch pwned)' is not allowed"),
        (
            ["executor.tunnel=ssh", "executor.host=127.0.0.1", "executor.port=1", "executor.job_dir=/tmp/x"],
            "cannot reach the SSH host root@127.0.0.1:1",
        ),
    ],
)
def test_bad_slurm_input_is_one_line_and_nothing_is_submitted(slurm, args, message):
    before = squeue_ids()
    result = launch(
        "pretrain",
        "executor=slurm",
        *[a for a in slurm[1:] if not any(a.split("=")[0] == b.split("=")[0] for b in args)],
        *args,
        "--yes",
    )
    assert result.returncode == 2, result.stderr[-2000:] + result.stdout[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:] + result.stdout[-2000:]
    assert squeue_ids() == before and not (ROOT / "pwned").exists()


def test_check_runs_the_submission_checks_and_submits_nothing(slurm, docker, tmp_path):
    before_jobs, before_containers = squeue_ids(), docker_containers()
    home = tmp_path / "nemo_home"
    env = dict(launch_env(), NEMORUN_HOME=str(home))
    created = subprocess.run([sys.executable, str(ROOT / "launch.py"), "check", "pretrain", *slurm], text=True,
                             capture_output=True, timeout=300, env=env)  # fmt: skip
    assert created.returncode == 0 and not home.exists(), created.stderr[-2000:]  # before: it made experiments/
    ok = launch("check", "pretrain", *slurm, f"executor.python_env={sys.prefix}", "trainer.max_steps=10")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "check: pretrain on SlurmExecutor: ok — nothing submitted" in ok.stdout
    assert launch("check", "predict", *docker, "--factory", "predict(checkpoint='/tmp')").returncode == 2
    for args, message in [
        (["pretrain", "executor=slurm", "executor.partition=nope"], "executor.partition='nope' does not exist"),
        (["pretrain", *docker[:1], "executor.image=local/not-there:1"], "executor.image='local/not-there:1' is not"),
        (["pretrain", "data.micro_batch_size=0"], "data.micro_batch_size=0 must be a positive integer"),
        (["pretrian"], "check: unknown recipe 'pretrian' (expected one of pretrain, finetune, predict)"),
    ]:
        result = launch("check", *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr[-2000:])
        assert len([line for line in result.stderr.splitlines() if line.startswith("error:")]) == 1
    assert squeue_ids() == before_jobs and docker_containers() == before_containers


def test_a_missing_image_is_one_line_and_nothing_is_started(docker):
    before = docker_containers()
    result = launch("pretrain", "executor=docker", "executor.image=local/not-there:1", "--yes")
    assert result.returncode == 2
    assert "executor.image='local/not-there:1' is not present on this Docker engine" in result.stderr
    assert docker_containers() == before


@pytest.mark.parametrize("executor", ["local", "slurm", "docker"])
def test_shell_metacharacters_are_data_never_code(executor, request, tmp_path):
    args = {"local": ["executor=local"]}.get(executor) or request.getfixturevalue(executor)
    marker = tmp_path / "pwned"
    bad_name = launch("pretrain", *args, "--name", f"x; touch {marker}", "--yes")
    assert bad_name.returncode == 2 and "is not a valid name" in bad_name.stderr
    # an override value full of metacharacters runs as a plain string (here: the folder of the runs, a path that
    # may hold any character; run names may not); a relative marker would appear in the job's working directory
    value = "a$(touch pwned)b;touch pwned`touch pwned`'\"x y"
    log_dir = f"{tmp_path}/{value}" if executor == "local" else value
    result = launch("pretrain", *args, *FAST, f"log.log_dir='{log_dir}'")
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    workdir = tmp_path if executor == "local" else job_dir_of(result.stdout, "pretrain") / "code"
    assert (workdir / value / "pretrain").is_dir()
    assert not list(tmp_path.glob("pwned")) and not (ROOT / "pwned").exists() and not (workdir / "pwned").exists()
    assert not (workdir.parent / "pwned").exists()


# -- values that may hold anything stay data on a real submit; fields that cannot are refused -----------------------
def no_markers(*folders: Path, name: str = "pwned") -> bool:
    return not any((folder / name).exists() for folder in (*folders, ROOT, Path.home(), Path("/tmp")))


def test_hostile_values_are_data_on_a_real_slurm_submit(slurm, tmp_path):
    marker = tmp_path / "pwned"
    # a virtual environment whose path holds shell code (a link to this one): sourced, never run
    env = tmp_path / "env;touch pwned;x"
    env.symlink_to(sys.prefix)
    result = launch(
        "pretrain", *slurm, *FAST, f"executor.python_env={env}",
        f"executor.env_vars={{'MARK': '$(touch {marker})', 'MARK2': '`touch {marker}`;touch pwned'}}",
        f"executor.comment=a$(touch {marker})", "log.name=hostile",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    job_dir = job_dir_of(result.stdout, "pretrain")
    script = next(job_dir.glob("*.sh")).read_text() if list(job_dir.glob("*.sh")) else ""
    (job_id,) = slurm_job_ids(job_dir)
    assert sacct_state(job_id) == ("COMPLETED", "0:0")
    assert_trained(job_dir / "code" / "runs" / "hostile")
    assert not marker.exists() and no_markers(tmp_path, job_dir, job_dir / "code"), script
    refused = launch("pretrain", *slurm, *FAST, f"executor.account=a$(touch {marker})")
    assert refused.returncode == 2 and "executor.account=" in refused.stderr and not marker.exists()


def test_srun_arguments_are_data_on_a_real_slurm_submit(slurm, tmp_path):
    # before: NeMo-Run wrote srun_args into the srun line unquoted, and `--x=$(touch M)` ran when the job started
    marker = tmp_path / "pwned"
    hostile = [f"--comment=a$(touch {marker})", f"--comment=b`touch {marker}`;touch {marker}"]
    dry = launch("pretrain", *slurm, *FAST, f"executor.srun_args={hostile!r}", "--dryrun")
    assert dry.returncode == 0, dry.stderr[-2000:]
    (srun,) = [line for line in dry.stdout.splitlines() if line.startswith("srun --output")]
    assert f"'--comment=a$(touch {marker})'" in srun, srun
    result = launch("pretrain", *slurm, *FAST, f"executor.srun_args={hostile!r}", "log.name=srunargs")
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    job_dir = job_dir_of(result.stdout, "pretrain")
    (job_id,) = slurm_job_ids(job_dir)
    assert sacct_state(job_id) == ("COMPLETED", "0:0")
    assert_trained(job_dir / "code" / "runs" / "srunargs")
    assert not marker.exists() and no_markers(tmp_path, job_dir, job_dir / "code")
    # container_env holds names of variables: anything else is refused before submitting
    refused = launch("pretrain", *slurm, *FAST, "executor.container_image=local/x:1",
                     f"executor.container_env=['A$(touch {marker})']")  # fmt: skip
    assert refused.returncode == 2 and "executor.container_env=" in refused.stderr and not marker.exists()


def test_a_name_ending_in_a_newline_never_reaches_a_shell(slurm, tmp_path):
    # before: '$' in the name rule matched before the final newline; NeMo-Run's packaging ran
    # `tar -cf .../evil\n/evil\n_ID/...` through bash, and an executable named `.tar.gz.tmp` on PATH ran
    marker = tmp_path / "pwned"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    trap = bin_dir / ".tar.gz.tmp"
    trap.write_text(f"#!/bin/sh\ntouch {marker}\n")
    trap.chmod(0o755)
    env = dict(launch_env(), PATH=f"{bin_dir}:{os.environ['PATH']}")
    before = squeue_ids()
    for args in (["pretrain", "--name=evil\n", *slurm, "--dryrun", "--skip-checks"],
                 ["pretrain", "--name=evil\n", *slurm, *FAST],
                 ["pipeline", "--name", "pl\n", *slurm, "--dryrun"],
                 ["pretrain", *slurm, *FAST, "log.name=evil\n"]):  # fmt: skip
        result = subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], capture_output=True, text=True,
                                timeout=300, env=env, cwd=tmp_path)  # fmt: skip
        assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
        assert "is not a valid name" in result.stderr or "holds a control character" in result.stderr
    assert not marker.exists() and squeue_ids() == before


def test_docker_with_an_absolute_log_dir_keeps_the_run_on_the_host(docker, tmp_path):
    marker, runs = tmp_path / "pwned", tmp_path / "abs-runs"
    env = f"executor.env={{'MARK': '$(touch {marker})'}}"
    dry = launch("pretrain", *docker, *FAST, f"log.log_dir={runs}", env, "--dryrun")
    assert dry.returncode == 0 and f"{runs}:{runs}" in dry.stdout, dry.stdout[-3000:] + dry.stderr[-2000:]
    result = launch("pretrain", *docker, *FAST, f"log.log_dir={runs}", env)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert_trained(runs / "pretrain")  # the checkpoints and CSV outlive the container
    assert not marker.exists()


# -- live progress --------------------------------------------------------------------------------------------------
def test_live_progress_on_slurm_pending_running_requeued_done(slurm, tmp_path):
    import threading

    # a job that takes every CPU of the node: ours pends behind it until it is cancelled
    # (its output to /dev/null: sbatch would write slurm-N.out into the repository, where the tests run)
    blocker = sh("sbatch", "--parsable", "-p", "debug", "-c", str(os.cpu_count()), "-o", "/dev/null",
                 "--wrap", "sleep 600").stdout.strip()  # fmt: skip
    before = set(squeue_ids())
    args = ["pretrain", *slurm, "trainer.max_steps=600", "trainer.val_check_interval=50", "log.name=live",
            "trainer.enable_progress_bar=false", "--yes"]  # fmt: skip
    job = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args], cwd=ROOT, env=launch_env(), text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(job.stdout.readline, "")), daemon=True)
    reader.start()

    def wait_line(pattern: str, timeout: float) -> int:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for index, line in enumerate(list(lines)):
                if re.search(pattern, line):
                    return index
            assert job.poll() is None or reader.is_alive(), "".join(lines[-40:])
            time.sleep(0.2)
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n" + "".join(lines[-40:]))

    try:
        pending = wait_line(r"pretrain +PENDING \((Resources|Priority)\)", 120)
        sh("scancel", blocker)
        running = wait_line(r"pretrain +RUNNING +step (1\d\d|[2-9]\d\d)/600 +train [\d.]+ +val [\d.]+ .*steps/s", 300)
        (job_id,) = set(squeue_ids()) - before - {blocker}
        sh("scontrol", "requeue", job_id)  # as a preemption does
        requeued = wait_line(r"pretrain +\w+.*requeued 1x", 120)
        job.wait(timeout=600)
        reader.join(timeout=10)
    finally:
        sh("scancel", blocker, check=False)
        if job.poll() is None:
            job.kill()
    output = "".join(lines)
    assert job.returncode == 0, output[-6000:]
    done = next(i for i, line in enumerate(lines) if line.startswith("pretrain: SUCCEEDED"))
    assert pending < running < requeued < done, output[-6000:]
    assert "  run: " in lines[done + 1] and "steps: 600" in lines[done + 1]


def test_watch_follows_a_detached_experiment_to_its_end(slurm):
    result = launch("pretrain", *slurm, *FAST, "log.name=watched", "--detach")
    assert result.returncode == 0, result.stdout[-3000:]
    watched = launch("watch", experiment_id_of(result.stdout), "--every", "1")
    assert watched.returncode == 0, watched.stdout[-4000:] + watched.stderr[-2000:]
    assert re.search(r"pretrain +(PENDING|RUNNING)", watched.stdout)
    assert "pretrain: SUCCEEDED  job dir:" in watched.stdout and "steps: 20" in watched.stdout
