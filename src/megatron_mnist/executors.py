"""Where a recipe runs: factories returning configured NeMo-Run executors.

Data, not code paths — the training code never asks which one runs it. Registered for the CLI:

    python launch.py pretrain executor=local ...
    python launch.py pretrain executor=docker executor.image=nvcr.io/nvidia/nemo:25.09 executor.num_gpus=1 ...
    python launch.py pretrain executor=slurm executor.partition=debug executor.time=00:10:00 ...

The package's code reaches the job through :class:`SourcePackager`: the ``megatron_mnist`` folder as it is on disk,
unpacked into the job's ``code/`` folder, which is the job's working directory (so a relative ``log.log_dir``
lands inside the job directory).
"""

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import nemo_run as run

PACKAGE_DIR = Path(__file__).resolve().parent


def describe_source() -> str:
    """Which code a job runs: the git commit and whether the working tree differs from it (NVIDIA-NeMo/Run#40)."""
    repo = PACKAGE_DIR.parent.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--", "src", "recipes", "launch.py").strip())
    except (OSError, subprocess.CalledProcessError):
        from megatron_mnist import __version__

        return f"megatron_mnist {__version__} from {PACKAGE_DIR} (not a git checkout)"
    return f"megatron_mnist at {commit}{' + uncommitted changes' if dirty else ''} ({PACKAGE_DIR})"


@dataclass(kw_only=True)
class SourcePackager(run.PatternPackager):
    """Ships ``megatron_mnist`` as it is on disk — the working tree, not the last commit — and writes
    ``SOURCE.txt`` (commit + dirty flag) beside the job's code."""

    include_pattern: str | list[str] = str(PACKAGE_DIR)
    relative_path: str | list[str] = str(PACKAGE_DIR.parent)

    def package(self, path: Path, job_dir: str, name: str) -> str:
        Path(job_dir, "SOURCE.txt").write_text(describe_source() + "\n")
        return super().package(path, job_dir, name)


def _venv_base(python_env: str) -> str:
    """The base interpreter's prefix of a virtual environment (pyvenv.cfg's ``home`` is its bin folder)."""
    cfg = Path(python_env, "pyvenv.cfg")
    for line in cfg.read_text().splitlines() if cfg.is_file() else []:
        key, _, value = line.partition("=")
        if key.strip() == "home":
            return str(Path(value.strip()).parent)
    return sys.base_prefix


@run.cli.factory
def local(ntasks_per_node: int = 1, launcher: Optional[str] = None) -> run.Config[run.LocalExecutor]:
    """This machine, in a child process (``launcher="torchrun"`` with ``ntasks_per_node`` > 1 for several ranks)."""
    if ntasks_per_node < 1:
        raise ValueError(f"executor.ntasks_per_node={ntasks_per_node} must be a positive integer")
    if launcher is None and ntasks_per_node > 1:
        launcher = "torchrun"
    # The job runs `python -m nemo_run...`: make that the interpreter launching it (e.g. the project's venv),
    # whether or not the venv is activated.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return run.Config(run.LocalExecutor, ntasks_per_node=ntasks_per_node, launcher=launcher, env_vars={"PATH": path})


@run.cli.factory
def docker(
    image: str = "nvcr.io/nvidia/nemo:25.09",
    num_gpus: int = 0,
    shm_size: str = "8g",
    volumes: Optional[list[str]] = None,
    env: Optional[dict[str, str]] = None,
    python_env: Optional[str] = None,
) -> run.Config[run.DockerExecutor]:
    """A container on this machine's Docker engine.

    Args:
        image: an image that holds the NeMo 2 stack (NVIDIA's NeMo container), or any Python image with
            ``python_env`` set.
        num_gpus: GPUs to pass through (needs NVIDIA's container runtime on the host).
        shm_size: /dev/shm size; dataloader workers share memory through it.
        volumes: extra ``HOST:CONTAINER[:ro]`` mounts.
        env: extra environment variables.
        python_env: a virtual environment on the host to run instead of the image's Python; it and its base
            interpreter are mounted read-only at the same paths.
    """
    mounts, env_vars = list(volumes or []), dict(env or {})
    if python_env:
        python_env = str(Path(python_env).resolve())
        if not Path(python_env, "pyvenv.cfg").is_file():
            raise ValueError(f"executor.python_env={python_env!r} is not a virtual environment on this machine")
        base = _venv_base(python_env)
        mounts += [f"{base}:{base}:ro", f"{python_env}:{python_env}:ro"]
        env_vars.setdefault("PATH", f"{python_env}/bin:/usr/local/bin:/usr/bin:/bin")
    return run.Config(
        run.DockerExecutor,
        container_image=image,
        num_gpus=num_gpus,
        shm_size=shm_size,
        volumes=mounts,
        env_vars=env_vars,
        packager=run.Config(SourcePackager),
    )


@run.cli.factory
def slurm(
    account: str = "",
    partition: Optional[str] = None,
    nodes: int = 1,
    ntasks_per_node: int = 1,
    gpus_per_node: Optional[int] = None,
    time: str = "01:00:00",
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
    # quoted: the path is data in the sbatch script (preflight.python_envs reads it back to check it exists)
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
        tunnel=link,
        packager=run.Config(SourcePackager),
    )


FACTORIES = {"local": local, "docker": docker, "slurm": slurm}
# NeMo-Run's --help lists the factories of Executor, LocalExecutor, SlurmExecutor and SkypilotExecutor only: list
# docker there too (under the base type), so that a recipe's --help names every executor this package offers
run.cli.factory(docker.wrapped, target=run.Executor, name="docker")


def mount_recipe_paths(executor, recipes) -> None:
    """Docker: mount the recipes' absolute host paths at the same paths in the container — ``log.log_dir``
    read-write (else the runs' checkpoints and logs would stay in the container and vanish with it), ``data.root``
    and ``model.initial_ckpt_path`` read-only. A relative ``log.log_dir`` is inside the job directory, which NeMo-Run
    mounts itself. The dry run shows the volumes."""
    if not isinstance(executor, run.DockerExecutor):
        return
    wanted = []
    for recipe in recipes:
        for key, mode in (("log.log_dir", "rw"), ("data.root", "ro"), ("model.initial_ckpt_path", "ro")):
            section, _, field = key.partition(".")
            value = getattr(getattr(recipe, section, None), field, None)
            if isinstance(value, str) and value.startswith("/"):
                wanted.append((os.path.normpath(value), mode))
    for path, mode in sorted(wanted, key=lambda w: (w[1] != "rw", len(w[0]))):  # read-write first, outer first
        if not any(_covers(volume, path, mode) for volume in executor.volumes):
            executor.volumes.append(f"{path}:{path}" + (":ro" if mode == "ro" else ""))


def _covers(volume: str, path: str, mode: str) -> bool:
    """An existing ``HOST:CONTAINER[:OPTS]`` volume already gives the container ``path`` at ``path``."""
    host, container, *opts = volume.split(":")
    inside = path == host or path.startswith(host.rstrip("/") + "/")
    return inside and host == container and (mode == "ro" or "ro" not in (opts[0].split(",") if opts else []))
