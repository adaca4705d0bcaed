"""What each executor field may hold, so that no value becomes shell code or a path outside its folder.

NeMo-Run writes some executor fields into the sbatch script without quoting: the account (as the job-name prefix
inside ``srun --output PATH``), the job directory (in every log path, ``cd`` and the ``sbatch`` command run through
the tunnel) and ``env_vars`` (``export KEY=VALUE``). Others are quoted (``#SBATCH`` flags, container flags, srun
arguments) but a newline inside a quoted ``#SBATCH`` value still starts a new script line. So:

- a field that names something (account, partition, qos, image, host, user ...) is refused unless it holds only
  what such a name can legally hold;
- a field that is a path reaching the script unquoted (the job directory, container mounts) is refused if it holds
  a shell metacharacter or whitespace;
- ``env_vars`` values may hold anything: the Slurm kind quotes them for the script (``slurm_cluster.quote_env_values``;
  Docker and the local executor pass them as data, never through a shell);
- ``time`` must be one of Slurm's formats, counts positive integers;
- every other string field is refused if it holds a newline or another control character;
- ``setup_lines`` is the one field that is shell code by design (``module load ...``): it is the user's own script.

This module holds the rules' vocabulary; each executor kind applies them to its fields (``check_fields`` in its
module under ``megatron_mnist/executors/``). ``executors.check_fields`` runs before every submission, dry run and
``check`` — also with ``--skip-checks``, as names do.
"""

import re
from dataclasses import fields, is_dataclass

from megatron_mnist.errors import FieldError

# Each rule is applied with fullmatch (a "$" anchor would also accept a trailing newline).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # account, partition, qos, reservation ...
HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[?[0-9A-Fa-f:]+\]?")
USER = re.compile(r"[A-Za-z_][A-Za-z0-9._-]{0,31}")
IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}")  # registry/name:tag@digest, or a .sqsh path
# no whitespace, quotes, $ ` ; | & < > ( ) \ and no ',' (NeMo-Run joins container mounts with commas)
SAFE_PATH = re.compile(r"[A-Za-z0-9._/+@~-][A-Za-z0-9._/+@=~-]*")
ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Slurm's --time: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS (or UNLIMITED / INFINITE)
SLURM_TIME = re.compile(r"(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+(:\d{1,2}(:\d{1,2})?)?|UNLIMITED|INFINITE)")
SHM_SIZE = re.compile(r"\d+(\.\d+)?[bkmgBKMG]?")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
SLURM_NAMES = ("account", "partition", "qos", "job_name_prefix", "reservation", "network", "dependency_type")
SLURM_COUNTS = ("nodes", "ntasks_per_node", "gpus_per_node", "gpus_per_task", "cpus_per_task", "cpus_per_gpu")
SHELL_BY_DESIGN = ("setup_lines",)


def refuse(key: str, value, expected: str) -> None:
    raise FieldError(f"executor.{key}={value!r} is not allowed: expected {expected}")


def check_path(key: str, value: str) -> None:
    if value and not SAFE_PATH.fullmatch(value):
        refuse(
            key, value, "a path of letters, digits and . _ / + @ = ~ - (no spaces, quotes, commas or shell characters)"
        )


def check_mount(key: str, mount: str) -> None:
    """``HOST:CONTAINER[:OPTIONS]`` (Docker also takes a named volume for HOST)."""
    parts = mount.split(":")
    if not 2 <= len(parts) <= 3 or not all(parts[:2]):
        refuse(key, mount, "HOST:CONTAINER[:ro]")
    if not all(SAFE_PATH.fullmatch(part) for part in parts[:2]):
        refuse(
            key,
            mount,
            "HOST:CONTAINER paths of letters, digits and . _ / + @ = ~ - (no spaces, commas or shell characters)",
        )
    if len(parts) == 3 and not re.fullmatch(r"[a-z,]+", parts[2]):
        refuse(key, mount, "HOST:CONTAINER[:OPTIONS] with options such as ro or rw")


def no_control_chars(key: str, value) -> None:
    """Every string inside ``value`` (lists and dicts too) is one line."""
    if isinstance(value, str):
        if CONTROL.search(value):
            refuse(key, value, "one line without control characters")
    elif isinstance(value, (list, tuple)):
        for item in value:
            no_control_chars(key, item)
    elif isinstance(value, dict):
        for k, v in value.items():
            no_control_chars(key, k)
            no_control_chars(f"{key}[{k!r}]", v)


def every_field_one_line(executor, shell_by_design: tuple[str, ...] = ()) -> None:
    """:func:`no_control_chars` over every field of the executor but the nested dataclasses (a tunnel, a packager)
    and the fields that are shell code by design."""
    for field in fields(executor):
        value = getattr(executor, field.name, None)
        if field.name not in shell_by_design and not is_dataclass(value):
            no_control_chars(field.name, value)


def check_env(key: str, env: dict) -> None:
    for name, value in (env or {}).items():
        if not ENV_KEY.fullmatch(str(name)):
            refuse(f"{key}[{name!r}]", value, "an environment variable name of letters, digits and _")
