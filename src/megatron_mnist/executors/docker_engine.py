"""``executor=docker``: a container on this machine's Docker engine."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import nemo_run as run

from megatron_mnist.errors import PreflightError
from megatron_mnist.executors.base import ExecutorKind, Shape
from megatron_mnist.executors.fields import IMAGE, SHM_SIZE, check_env, check_mount, every_field_one_line, refuse
from megatron_mnist.executors.packaging import SourcePackager
from megatron_mnist.job_protocol import CONTAINER_JOB_DIR, PROGRESS_FILE


def _venv_base(python_env: str) -> str:
    """The base interpreter's prefix of a virtual environment (pyvenv.cfg's ``home`` is its bin folder)."""
    cfg = Path(python_env, "pyvenv.cfg")
    for line in cfg.read_text().splitlines() if cfg.is_file() else []:
        key, _, value = line.partition("=")
        if key.strip() == "home":
            return str(Path(value.strip()).parent)
    return sys.base_prefix


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


# NeMo-Run's --help lists the factories of Executor, LocalExecutor, SlurmExecutor and SkypilotExecutor only: list
# docker there too (under the base type), so that a recipe's --help names every executor this package offers
run.cli.factory(docker.wrapped, target=run.Executor, name="docker")


def shape(executor: run.DockerExecutor) -> Shape:
    return Shape(executor.ntasks_per_node, 1, executor.num_gpus or 0, sees_local_files=True)


def check_fields(executor: run.DockerExecutor) -> None:
    if not IMAGE.fullmatch(executor.container_image or ""):
        refuse("image", executor.container_image, "an image reference such as nvcr.io/nvidia/nemo:25.09")
    if not SHM_SIZE.fullmatch(str(executor.shm_size)):
        refuse("shm_size", executor.shm_size, "a size such as 8g or 512m")
    for volume in executor.volumes:
        check_mount("volumes", volume)
    check_env("env", executor.env_vars)  # values pass as data (the Docker API)
    every_field_one_line(executor)


def preflight(executor: run.DockerExecutor) -> None:
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


def mount_recipe_paths(executor, recipes) -> None:
    """Docker: mount the recipes' absolute host paths at the same paths in the container — ``log.log_dir``
    read-write (else the runs' checkpoints and logs would stay in the container and vanish with it), ``data.root``
    and ``model.initial_ckpt_path`` read-only. A relative ``log.log_dir`` is inside the job directory, which NeMo-Run
    mounts itself. The dry run shows the volumes."""
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


def stop(job, hard: bool) -> bool:
    """``docker kill`` the job's container, with SIGTERM unless ``hard`` (NeMo-Run names it EXPERIMENT-ID-TASK)."""
    name = f"{job.executor.experiment_id}_{job.id}".replace("_", "-")
    signal = "KILL" if hard else "TERM"
    return subprocess.run(["docker", "kill", f"--signal={signal}", name], capture_output=True).returncode == 0


def progress_path(executor: run.DockerExecutor) -> str:
    """The container sees its job directory at NeMo-Run's mount point."""
    return f"{CONTAINER_JOB_DIR}/{PROGRESS_FILE}"


def exit_code(files: dict[str, str]) -> int | None:
    """NeMo-Run's container command writes ``{"id": ..., "exit_code": "N"}`` to ``status_TASK.out`` as it ends."""
    for text in files.values():
        return int(json.loads(text)["exit_code"])
    return None


KIND = ExecutorKind(
    name="docker",
    executor_type=run.DockerExecutor,
    factory=docker,
    shape=shape,
    check_fields=check_fields,
    preflight=preflight,
    adapt_to_recipes=mount_recipe_paths,
    stop=stop,
    progress_path=progress_path,
    log_names=("log_*.out",),  # the container's output, tee'd by NeMo-Run's command
    status_names=("status_*.out",),
    exit_code=exit_code,
)
