"""Checks made before anything is submitted: each problem is one line naming the bad value and what was expected.

They look at the built executor — through its tunnel for Slurm, so the same checks serve a laptop reaching a login
node over SSH — and never import the training stack.
"""

import os
import re
import shlex
import subprocess
import tempfile
from pathlib import Path

import nemo_run as run

from megatron_mnist import names
from megatron_mnist.executor_fields import FieldError, check_fields


class PreflightError(ValueError):
    """What would make a submission fail, found before submitting it."""


def check_name(name: str, what: str = "name") -> None:
    """Names reach sbatch scripts, container names, folders and shell commands (``megatron_mnist.names``)."""
    try:
        names.check_name(name, what)
    except names.NameError_ as e:
        raise PreflightError(str(e)) from None


def check_executor_fields(executor) -> None:
    """What each field may hold (``megatron_mnist.executor_fields``): never skipped, like names."""
    try:
        check_fields(executor)
    except FieldError as e:
        raise PreflightError(str(e)) from None


def check_executor(executor) -> None:
    if isinstance(executor, run.SlurmExecutor):
        check_slurm(executor)
    elif isinstance(executor, run.DockerExecutor):
        check_docker(executor)


def _tunnel_run(tunnel, command: str) -> tuple[int, str]:
    """Run a command where the cluster is (this machine or the login node); (exit status, output)."""
    if isinstance(tunnel, run.SSHTunnel):
        try:
            tunnel.connect()
        except Exception as e:  # paramiko / socket errors: unreachable, refused, bad key
            raise PreflightError(
                f"cannot reach the SSH host {tunnel.user}@{tunnel.host}:{tunnel.port}: "
                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from e
        result = tunnel.run(command, hide=True, warn=True)
        return result.exited, result.stdout + result.stderr
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True)
    return result.returncode, result.stdout + result.stderr


def check_slurm(executor: run.SlurmExecutor) -> None:
    tunnel = executor.tunnel
    home = run.config.get_nemorun_home()
    if isinstance(tunnel, run.LocalTunnel) and not tunnel.job_dir and Path(home).name == "nemo_run":
        # NeMo-Run 0.11 rewrites paths at a folder named nemo_run, its in-container mount point: sbatch's output
        # path comes out doubled and the job dies before it starts (exit signal 53)
        raise PreflightError(
            f"NEMORUN_HOME={home} ends in a folder named nemo_run, which NeMo-Run's Slurm paths "
            f"cannot take: use another name (the default is ~/.nemo_run)"
        )
    status, out = _tunnel_run(tunnel, "sinfo -h -o '%P|%D|%G'")
    if status != 0:
        raise PreflightError(f"cannot query Slurm (sinfo) {_where(tunnel)}: {out.strip()[:200]}")
    partitions: dict[str, int] = {}  # GPUs per node
    nodes: dict[str, int] = {}
    default = None
    for line in out.splitlines():
        name, count, gres = (line.strip().split("|") + ["", ""])[:3]
        if name.endswith("*"):  # the default partition is starred
            name = default = name[:-1]
        gpus = sum(int(m) for m in re.findall(r"gpu(?::[^:,(]+)?:(\d+)", gres))
        partitions[name] = max(partitions.get(name, 0), gpus)
        nodes[name] = nodes.get(name, 0) + (int(count) if count.isdigit() else 0)  # one line per node state
    partition = executor.partition or default
    if executor.partition and executor.partition not in partitions:
        raise PreflightError(
            f"executor.partition={executor.partition!r} does not exist on the cluster "
            f"(partitions: {', '.join(sorted(partitions)) or 'none'})"
        )
    asked = executor.gpus_per_node or 0
    if asked and partition is not None and asked > partitions.get(partition, 0):
        raise PreflightError(
            f"executor.gpus_per_node={asked} but partition {partition} has at most "
            f"{partitions.get(partition, 0)} GPU(s) per node"
        )
    if partition is not None and executor.nodes > nodes.get(partition, 0):
        raise PreflightError(
            f"executor.nodes={executor.nodes} but partition {partition} has {nodes.get(partition, 0)} node(s): "
            "the job would pend forever"
        )
    for env in python_envs(executor):
        if _tunnel_run(tunnel, f"test -f {shlex.quote(env + '/bin/activate')}")[0] != 0:
            raise PreflightError(
                f"executor.python_env={env!r} is not a virtual environment {_where(tunnel)} (no bin/activate)"
            )
    job_dir = tunnel.job_dir or os.path.join(run.config.get_nemorun_home(), "experiments")
    status, out = _tunnel_run(tunnel, f"mkdir -p {shlex.quote(job_dir)} && test -w {shlex.quote(job_dir)}")
    if status != 0:
        raise PreflightError(f"executor.job_dir={job_dir!r} is not writable {_where(tunnel)}")


def python_envs(executor: run.SlurmExecutor) -> list[str]:
    """The virtual environments the slurm factory's setup lines activate (``source ENV/bin/activate``)."""
    found = []
    for line in (executor.setup_lines or "").splitlines():
        words = shlex.split(line) if line.startswith("source ") else []
        if len(words) == 2 and words[1].endswith("/bin/activate"):
            found.append(words[1][: -len("/bin/activate")])
    return found


def _where(tunnel) -> str:
    return f"on {tunnel.host}" if isinstance(tunnel, run.SSHTunnel) else "on this machine"


def check_docker(executor: run.DockerExecutor) -> None:
    try:
        result = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Id}}", executor.container_image],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except FileNotFoundError as e:
        raise PreflightError("docker is not installed on this machine (the docker executor needs an engine)") from e
    if result.returncode != 0:
        if "Cannot connect to the Docker daemon" in result.stderr:
            raise PreflightError(f"the Docker engine does not answer: {result.stderr.strip()[:200]}")
        raise PreflightError(
            f"executor.image={executor.container_image!r} is not present on this Docker engine "
            f"(docker pull it, or build it)"
        )
    for volume in executor.volumes:
        host = volume.split(":")[0]
        if host.startswith("/") and not Path(host).exists():
            raise PreflightError(f"executor.volumes: {host} does not exist on this machine")


def check_writable(path: str, what: str) -> None:
    """A local output folder (a run's log_dir): created if missing, and writable."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as e:
        raise PreflightError(f"{what}={path!r} is not a writable directory ({e.strerror})") from e
