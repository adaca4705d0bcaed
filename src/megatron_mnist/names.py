"""The rule for every name that becomes a folder, a job name or part of a command: run names (``log.name``), job and
experiment names (``--name``), sweep and pipeline names. Torch-free: the launcher and the job both apply it."""

import re

from megatron_mnist.errors import InvalidName

MAX_NAME = 100
# used with fullmatch, never match with '$': in Python '$' also matches before a final newline, and 'evil\n' reached
# a shell as two lines (NeMo-Run's packaging runs tar through bash with the experiment's name in its paths)
SAFE_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME - 1}}}")  # so never '', '.', '..', 'a/b', '-x'


def check_name(name, what: str = "name") -> None:
    # letters, digits, '.', '_', '-', starting with a letter or digit: no path separator, no '.'/'..', no shell
    # character, and short enough for any file system (NAME-N and NAME.lock must fit in 255 bytes)
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise InvalidName(
            f"{what}={name!r} is not a valid name: use letters, digits, '.', '_' and '-' "
            f"(at most {MAX_NAME}, starting with a letter or digit)"
        )
