"""``executor=slurm``: a Slurm cluster, reached on this machine (``tunnel=local``) or over SSH from a laptop."""

import os
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path
from typing import Literal, Optional

import nemo_run as run

from megatron_mnist.errors import PreflightError
from megatron_mnist.executors.base import (
    ExecutorKind,
    JobFolder,
    JobFolderUnreachable,
    Shape,
    progress_in_job_dir,
    this_machines_folder,
)
from megatron_mnist.executors.fields import (
    ENV_KEY,
    HOST,
    IMAGE,
    NAME,
    SHELL_BY_DESIGN,
    SLURM_COUNTS,
    SLURM_NAMES,
    SLURM_TIME,
    USER,
    check_env,
    check_mount,
    check_path,
    every_field_one_line,
    refuse,
)
from megatron_mnist.executors.packaging import SourcePackager
from megatron_mnist.job_protocol import PROGRESS_FILE


@run.cli.factory
def slurm(
    account: str = "",
    partition: Optional[str] = None,
    nodes: int = 1,
    ntasks_per_node: int = 1,
    gpus_per_node: Optional[int] = None,
    time: str = "01:00:00",
    reservation: Optional[str] = None,
    job_dir: Optional[str] = None,
    python_env: Optional[str] = None,
    setup_lines: Optional[str] = None,
    container_image: Optional[str] = None,
    container_mounts: Optional[list[str]] = None,
    tunnel: Literal["local", "ssh"] = "local",
    host: Optional[str] = None,
    user: Optional[str] = None,
    identity: Optional[str] = None,
    port: int = 22,
) -> run.Config[run.SlurmExecutor]:
    """A Slurm cluster, reached on this machine (``tunnel=local``) or over SSH from a laptop (``tunnel=ssh``).

    Args:
        account / partition / nodes / ntasks_per_node / gpus_per_node / time: the sbatch request
            (``gpus_per_node`` becomes ``--gpus-per-node``).
        reservation: a Slurm reservation to run in (``#SBATCH --reservation``).
        job_dir: where jobs are staged on the cluster (ssh: required, an absolute path there; local: NeMo-Run's
            experiments folder unless given).
        python_env: a virtual environment on the cluster that holds the NeMo 2 stack; its ``bin/activate`` is
            sourced before the job (default with the local tunnel: the environment running this launcher).
        setup_lines: shell lines to run before the job instead (``module load ...``), or in addition.
        container_image / container_mounts: run inside a container through pyxis/enroot instead, where the cluster
            has them (``--container-image``).
        host / user / identity / port: the login node, for ``tunnel=ssh`` (key authentication).
    """
    if tunnel not in ("local", "ssh"):
        raise ValueError(f"executor.tunnel={tunnel!r} must be local or ssh")
    if tunnel == "ssh":
        if not host or not job_dir:
            raise ValueError("executor.tunnel=ssh needs executor.host and executor.job_dir (a path on the cluster)")
        link = run.Config(
            run.SSHTunnel,
            host=host,
            user=user or os.environ.get("USER", "root"),
            port=port,
            identity=identity,
            job_dir=job_dir,
        )
    else:
        link = run.Config(run.LocalTunnel, job_dir=job_dir or "")
        if python_env is None and container_image is None:
            python_env = sys.prefix
    # quoted: the path is data in the sbatch script (python_envs below reads it back to check it exists)
    lines = (
        [f"source {shlex.quote(str(Path(python_env) / 'bin' / 'activate'))}"]
        if python_env and not container_image
        else []
    )
    lines += [setup_lines] if setup_lines else []
    return run.Config(
        run.SlurmExecutor,
        account=account,
        partition=partition,
        nodes=nodes,
        ntasks_per_node=ntasks_per_node,
        gpus_per_node=gpus_per_node,
        time=time,
        container_image=container_image,
        container_mounts=list(container_mounts or []),
        setup_lines="\n".join(lines) or None,
        # NeMo-Run's executor has no reservation field: it takes sbatch's other flags as additional parameters.
        # A pipeline's stage waits for the one before (afterok); where that one fails, Slurm cancels it at once
        # instead of leaving it pending forever (DependencyNeverSatisfied) with the launcher waiting on it.
        additional_parameters={"kill_on_invalid_dep": "yes", **({"reservation": reservation} if reservation else {})},
        tunnel=link,
        packager=run.Config(SourcePackager),
    )


def shape(executor: run.SlurmExecutor) -> Shape:
    local_files = isinstance(executor.tunnel, run.LocalTunnel)  # behind SSH the job reads the cluster's files
    return Shape(executor.ntasks_per_node, executor.nodes, executor.gpus_per_node or 0, local_files)


def check_fields(executor: run.SlurmExecutor) -> None:
    extra = executor.additional_parameters or {}
    for key in SLURM_NAMES:
        value = getattr(executor, key, None) or extra.get(key)
        if value and not NAME.fullmatch(str(value)):
            refuse(key, value, "a name of letters, digits, '.', '_' and '-'")
    for name in executor.container_env or []:  # --container-env NAME,NAME: names of this environment's variables
        if not ENV_KEY.fullmatch(str(name)):
            refuse("container_env", name, "names of environment variables (letters, digits and _)")
    if executor.dependencies:
        refuse("dependencies", executor.dependencies, "none: a pipeline's stages depend on each other by themselves")
    if executor.resource_group or executor.heterogeneous or executor.run_as_group:
        refuse("resource_group", executor.resource_group, "none: heterogeneous jobs are not offered by this launcher")
    for key in SLURM_COUNTS:
        value = getattr(executor, key, None)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            refuse(key, value, "a positive integer")
    if not SLURM_TIME.fullmatch(str(executor.time)):
        refuse("time", executor.time, "a Slurm time limit: MINUTES, HH:MM:SS or D-HH:MM:SS, e.g. 01:30:00")
    if executor.container_image and not IMAGE.fullmatch(executor.container_image):
        refuse("container_image", executor.container_image, "an image reference such as nvcr.io/nvidia/nemo:25.09")
    for mount in executor.container_mounts or []:
        check_mount("container_mounts", mount)
    check_env("env_vars", executor.env_vars)
    tunnel = executor.tunnel
    check_path("job_dir", getattr(tunnel, "job_dir", "") or "")
    check_path("job_dir", executor.job_dir or "")
    if isinstance(tunnel, run.SSHTunnel):
        if not HOST.fullmatch(tunnel.host or ""):
            refuse("host", tunnel.host, "a host name or address")
        if not USER.fullmatch(tunnel.user or ""):
            refuse("user", tunnel.user, "a user name of letters, digits, '.', '_' and '-'")
        if not isinstance(tunnel.port, int) or not 0 < tunnel.port < 65536:
            refuse("port", tunnel.port, "a port number 1-65535")
    every_field_one_line(executor, shell_by_design=SHELL_BY_DESIGN)


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


def preflight(executor: run.SlurmExecutor) -> None:
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
    # writable where it exists, else where it would be created (its nearest existing folder): probed with a file
    # made and removed at once, so a check creates nothing (NeMo-Run makes the folder when it submits)
    probe = (
        f'd={shlex.quote(job_dir)}; while [ ! -e "$d" ]; do d=$(dirname "$d"); done; '
        '[ -d "$d" ] && f=$(mktemp -p "$d" .megatron-mnist-probe.XXXXXX) && rm -f "$f"'
    )
    status, out = _tunnel_run(tunnel, probe)
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


def quote_for_the_script(executor: run.SlurmExecutor, recipes=()) -> None:
    """NeMo-Run writes ``export KEY=VALUE`` and the ``srun`` line's arguments into the sbatch script as they are (its
    ``noquote`` is an alias of ``str``, so its own quoting never applies); quote each environment value and each
    ``srun_args`` item so that it stays data (``$HOME`` stays the four characters, as with Docker and the local
    executor; ``--x=$(touch M)`` reaches srun as that one argument). Once per executor."""
    if not getattr(executor, "_quoted_for_script", False):
        executor.env_vars = {key: shlex.quote(str(value)) for key, value in executor.env_vars.items()}
        executor.srun_args = [shlex.quote(str(arg)) for arg in executor.srun_args or []] or None
        executor._quoted_for_script = True


def shared_dir(log_dir: str, executor: run.SlurmExecutor) -> str:
    """Behind an SSH tunnel a relative ``log_dir`` is inside the cluster's job directory; else this machine's."""
    if isinstance(executor.tunnel, run.SSHTunnel):
        return log_dir if log_dir.startswith("/") else f"{executor.tunnel.job_dir}/{log_dir}"
    return this_machines_folder(log_dir, executor)


def slurm_job_id(job) -> str | None:
    """The Slurm job id in a NeMo-Run job's handle (``.../ID``)."""
    found = re.search(r"(\d+)$", getattr(job, "handle", "") or "")
    return found[1] if found else None


FILE_MARK = "==> megatron_mnist file: "  # between the files one command reads back through the tunnel


_CONNECTIONS: dict[tuple, run.SSHTunnel] = {}  # (thread, user, host, port) → an open connection of the launcher's


def _connection_key(tunnel: run.SSHTunnel) -> tuple:
    return threading.get_ident(), tunnel.user, tunnel.host, tunnel.port


def _connection(tunnel: run.SSHTunnel) -> run.SSHTunnel:
    """This thread's SSH connection to the tunnel's host, opened at its first use and kept for every job folder
    there: one per host for the launcher and one for its live view's thread (a paramiko connection is not shared
    across threads; NeMo-Run's waiting threads use their own)."""
    key = _connection_key(tunnel)
    if key not in _CONNECTIONS:
        own = run.SSHTunnel(host=tunnel.host, user=tunnel.user, port=tunnel.port, identity=tunnel.identity,
                            job_dir=tunnel.job_dir)  # fmt: skip
        own.connect()
        _CONNECTIONS[key] = own
    return _CONNECTIONS[key]


class ClusterJobFolder(JobFolder):
    """A job's directory on the login node (NeMo-Run's layout there: TUNNEL_JOB_DIR/TITLE/ID/TASK), read through the
    launcher's own SSH connection to that host (:func:`_connection`). A connection that fails raises
    :class:`JobFolderUnreachable`, and the next read connects again."""

    def __init__(self, executor: run.SlurmExecutor):
        self.tunnel = executor.tunnel
        self.path = f"{executor.tunnel.job_dir}/{os.path.basename(executor.job_dir)}"

    @property
    def where(self) -> str:
        return f"{self.tunnel.host}:{self.path}"

    def run(self, command: str) -> str:
        try:
            return _connection(self.tunnel).run(command, hide=True, warn=True).stdout
        except Exception as e:  # paramiko's and the socket's own errors: unreachable, refused, dropped, timed out
            _CONNECTIONS.pop(_connection_key(self.tunnel), None)  # the next read connects again
            raise JobFolderUnreachable(str(e).splitlines()[0] if str(e) else type(e).__name__) from e

    def read(self, name: str) -> str:
        return self.run(f"cat {shlex.quote(f'{self.path}/{name}')} 2>/dev/null")

    def find(self, patterns) -> dict[str, str]:
        """One round trip: the matching files, each after a line naming it."""
        names = " -o ".join(f"-name {shlex.quote(p)}" for p in patterns)
        text = self.run(
            f"find {shlex.quote(self.path)} -maxdepth 3 \\( {names} \\) -size +0 2>/dev/null | sort | "
            f'while read -r f; do echo "{FILE_MARK}$f"; cat "$f"; done'
        )
        files, current = {}, None
        for line in text.splitlines(keepends=True):
            if line.startswith(FILE_MARK):
                current = line[len(FILE_MARK) :].strip()
                files[current] = ""
            elif current is not None:
                files[current] += line
        return files


def job_folder(executor: run.SlurmExecutor) -> JobFolder:
    return ClusterJobFolder(executor) if isinstance(executor.tunnel, run.SSHTunnel) else JobFolder(executor)


def progress_path(executor: run.SlurmExecutor) -> str:
    """Behind an SSH tunnel the job writes in its folder on the cluster."""
    if isinstance(executor.tunnel, run.SSHTunnel):
        return f"{ClusterJobFolder(executor).path}/{PROGRESS_FILE}"
    return progress_in_job_dir(executor)


def exit_code(files: dict[str, str]) -> int | None:
    """NeMo-Run's sbatch script prints ``job exited with code N`` to its own output, once per run of the job (a
    requeued job: the last)."""
    for text in files.values():
        if found := re.findall(r"^job exited with code (\d+)$", text, re.M):
            return int(found[-1])
    return None


def live_state(job, folder: JobFolder) -> dict:
    """Slurm's state of the job, why it waits and how often it was requeued ({} once Slurm has forgotten it)."""
    job_id = slurm_job_id(job)
    if job_id is None:
        return {}
    text = folder.run(f"scontrol -o show job {shlex.quote(job_id)} 2>/dev/null")
    found = dict(re.findall(r"\b(JobState|Reason|Restarts)=(\S+)", text))
    word = {"state": found.get("JobState"), "reason": found.get("Reason"), "restarts": int(found.get("Restarts") or 0)}
    return word if found else {}


def stop(job, hard: bool) -> bool:
    """``scancel`` the job where the cluster is. Slurm's own cancel is already the graceful one: SIGTERM to every
    step (the job saves its last checkpoint and exits, as on a preemption), SIGKILL after the cluster's KillWait, and
    the job ends CANCELLED, not requeued — what a Slurm user reads in ``sacct``. ``hard`` kills the steps first."""
    job_id = slurm_job_id(job)
    if job_id is None:
        return False
    quoted = shlex.quote(job_id)
    command = f"scancel --full --signal=KILL {quoted}; scancel {quoted}" if hard else f"scancel {quoted}"
    return _tunnel_run(job.executor.tunnel, command)[0] == 0


KIND = ExecutorKind(
    name="slurm",
    executor_type=run.SlurmExecutor,
    factory=slurm,
    shape=shape,
    check_fields=check_fields,
    preflight=preflight,
    adapt_to_recipes=quote_for_the_script,
    shared_dir=shared_dir,
    can_detach=True,
    stop=stop,
    job_folder=job_folder,
    progress_path=progress_path,
    log_names=("log-*.out",),  # the srun step's output, one file per run of the job (SLURM_RESTART_COUNT)
    status_names=("sbatch_*.out",),
    exit_code=exit_code,
    live_state=live_state,
)
