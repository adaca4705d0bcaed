"""What each executor field may hold, so that no value becomes shell code or a path outside its folder.

NeMo-Run writes some executor fields into the sbatch script without quoting: the account (as the job-name prefix
inside ``srun --output PATH``), the job directory (in every log path, ``cd`` and the ``sbatch`` command run through
the tunnel) and ``env_vars`` (``export KEY=VALUE``). Others are quoted (``#SBATCH`` flags, container flags, srun
arguments) but a newline inside a quoted ``#SBATCH`` value still starts a new script line. So:

- a field that names something (account, partition, qos, image, host, user ...) is refused unless it holds only
  what such a name can legally hold;
- a field that is a path reaching the script unquoted (the job directory, container mounts) is refused if it holds
  a shell metacharacter or whitespace;
- ``env_vars`` values may hold anything: :func:`quote_env_values` quotes them for the Slurm script (Docker and the
  local executor pass them as data, never through a shell);
- ``time`` must be one of Slurm's formats, counts positive integers;
- every other string field is refused if it holds a newline or another control character;
- ``setup_lines`` is the one field that is shell code by design (``module load ...``): it is the user's own script.

:func:`check_fields` runs before every submission, dry run and ``check`` — also with ``--skip-checks``, as names do.
"""

import re
import shlex
from dataclasses import fields, is_dataclass

import nemo_run as run

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # account, partition, qos, reservation ...
HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$|^\[?[0-9A-Fa-f:]+\]?$")
USER = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]{0,31}$")
IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}$")  # registry/name:tag@digest, or a .sqsh path
# no whitespace, quotes, $ ` ; | & < > ( ) \ and no ',' (NeMo-Run joins container mounts with commas)
SAFE_PATH = re.compile(r"^[A-Za-z0-9._/+@~-][A-Za-z0-9._/+@=~-]*$")
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Slurm's --time: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS (or UNLIMITED / INFINITE)
SLURM_TIME = re.compile(r"^(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+(:\d{1,2}(:\d{1,2})?)?|UNLIMITED|INFINITE)$")
SHM_SIZE = re.compile(r"^\d+(\.\d+)?[bkmgBKMG]?$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
SLURM_NAMES = ("account", "partition", "qos", "job_name_prefix", "reservation", "network", "dependency_type")
SLURM_COUNTS = ("nodes", "ntasks_per_node", "gpus_per_node", "gpus_per_task", "cpus_per_task", "cpus_per_gpu")
SHELL_BY_DESIGN = ("setup_lines",)


class FieldError(ValueError):
    """An executor field that cannot be submitted safely; the message names it and what it may hold."""


def _refuse(key: str, value, expected: str) -> None:
    raise FieldError(f"executor.{key}={value!r} is not allowed: expected {expected}")


def _check_path(key: str, value: str) -> None:
    if value and not SAFE_PATH.match(value):
        _refuse(
            key, value, "a path of letters, digits and . _ / + @ = ~ - (no spaces, quotes, commas or shell characters)"
        )


def _check_mount(key: str, mount: str) -> None:
    """``HOST:CONTAINER[:OPTIONS]`` (Docker also takes a named volume for HOST)."""
    parts = mount.split(":")
    if not 2 <= len(parts) <= 3 or not all(parts[:2]):
        _refuse(key, mount, "HOST:CONTAINER[:ro]")
    if not all(SAFE_PATH.match(part) for part in parts[:2]):
        _refuse(
            key,
            mount,
            "HOST:CONTAINER paths of letters, digits and . _ / + @ = ~ - (no spaces, commas or shell characters)",
        )
    if len(parts) == 3 and not re.fullmatch(r"[a-z,]+", parts[2]):
        _refuse(key, mount, "HOST:CONTAINER[:OPTIONS] with options such as ro or rw")


def _no_control_chars(key: str, value) -> None:
    """Every string inside ``value`` (lists and dicts too) is one line."""
    if isinstance(value, str):
        if CONTROL.search(value):
            _refuse(key, value, "one line without control characters")
    elif isinstance(value, (list, tuple)):
        for item in value:
            _no_control_chars(key, item)
    elif isinstance(value, dict):
        for k, v in value.items():
            _no_control_chars(key, k)
            _no_control_chars(f"{key}[{k!r}]", v)


def _check_env(key: str, env: dict) -> None:
    for name, value in (env or {}).items():
        if not ENV_KEY.match(str(name)):
            _refuse(f"{key}[{name!r}]", value, "an environment variable name of letters, digits and _")


def check_fields(executor) -> None:
    """Raise :class:`FieldError` for the first field that cannot be submitted safely."""
    if isinstance(executor, run.SlurmExecutor):
        _check_slurm(executor)
    elif isinstance(executor, run.DockerExecutor):
        _check_docker(executor)
    elif isinstance(executor, run.LocalExecutor):
        _check_env("env_vars", executor.env_vars)


def _check_slurm(executor: run.SlurmExecutor) -> None:
    for key in SLURM_NAMES:
        value = getattr(executor, key, None)
        if value and not NAME.match(str(value)):
            _refuse(key, value, "a name of letters, digits, '.', '_' and '-'")
    for key in SLURM_COUNTS:
        value = getattr(executor, key, None)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            _refuse(key, value, "a positive integer")
    if not SLURM_TIME.match(str(executor.time)):
        _refuse("time", executor.time, "a Slurm time limit: MINUTES, HH:MM:SS or D-HH:MM:SS, e.g. 01:30:00")
    if executor.container_image and not IMAGE.match(executor.container_image):
        _refuse("container_image", executor.container_image, "an image reference such as nvcr.io/nvidia/nemo:25.09")
    for mount in executor.container_mounts or []:
        _check_mount("container_mounts", mount)
    _check_env("env_vars", executor.env_vars)
    tunnel = executor.tunnel
    _check_path("job_dir", getattr(tunnel, "job_dir", "") or "")
    _check_path("job_dir", executor.job_dir or "")
    if isinstance(tunnel, run.SSHTunnel):
        if not HOST.match(tunnel.host or ""):
            _refuse("host", tunnel.host, "a host name or address")
        if not USER.match(tunnel.user or ""):
            _refuse("user", tunnel.user, "a user name of letters, digits, '.', '_' and '-'")
        if not isinstance(tunnel.port, int) or not 0 < tunnel.port < 65536:
            _refuse("port", tunnel.port, "a port number 1-65535")
    for field in fields(executor):
        value = getattr(executor, field.name, None)
        if field.name not in SHELL_BY_DESIGN and not is_dataclass(value):
            _no_control_chars(field.name, value)


def _check_docker(executor: run.DockerExecutor) -> None:
    if not IMAGE.match(executor.container_image or ""):
        _refuse("image", executor.container_image, "an image reference such as nvcr.io/nvidia/nemo:25.09")
    if not SHM_SIZE.match(str(executor.shm_size)):
        _refuse("shm_size", executor.shm_size, "a size such as 8g or 512m")
    for volume in executor.volumes:
        _check_mount("volumes", volume)
    _check_env("env", executor.env_vars)
    for field in fields(executor):
        value = getattr(executor, field.name, None)
        if not is_dataclass(value):
            _no_control_chars(field.name, value)


def quote_env_values(executor) -> None:
    """Slurm only: NeMo-Run writes ``export KEY=VALUE`` into the sbatch script as it is; quote each value so that it
    stays data (``$HOME`` stays the four characters, as with Docker and the local executor). Once per executor."""
    if isinstance(executor, run.SlurmExecutor) and not getattr(executor, "_env_quoted", False):
        executor.env_vars = {key: shlex.quote(str(value)) for key, value in executor.env_vars.items()}
        executor._env_quoted = True
