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

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class PreflightError(ValueError):
    """What would make a submission fail, found before submitting it."""


def check_name(name: str, what: str = "name") -> None:
    # Names reach sbatch scripts, container names and shell commands: letters, digits, '.', '_' and '-' only.
    if not SAFE_NAME.match(name or ""):
        raise PreflightError(
            f"{what}={name!r} is not a valid job name: use letters, digits, '.', '_' and '-' "
            f"(at most 100, starting with a letter or digit)"
        )


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
    status, out = _tunnel_run(tunnel, "sinfo -h -o '%P %G'")
    if status != 0:
        raise PreflightError(f"cannot query Slurm (sinfo) {_where(tunnel)}: {out.strip()[:200]}")
    partitions: dict[str, int] = {}
    for line in out.splitlines():
        name, _, gres = line.strip().partition(" ")
        name = name.rstrip("*")  # the default partition is starred
        gpus = sum(int(m) for m in re.findall(r"gpu(?::[^:,(]+)?:(\d+)", gres))
        partitions[name] = max(partitions.get(name, 0), gpus)
    partition = executor.partition or next((p.rstrip("*") for p in out.split() if p.endswith("*")), None)
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
    job_dir = tunnel.job_dir or os.path.join(run.config.get_nemorun_home(), "experiments")
    status, out = _tunnel_run(tunnel, f"mkdir -p {shlex.quote(job_dir)} && test -w {shlex.quote(job_dir)}")
    if status != 0:
        raise PreflightError(f"executor.job_dir={job_dir!r} is not writable {_where(tunnel)}")


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
