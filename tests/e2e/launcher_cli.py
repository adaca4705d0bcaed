"""``launch.py`` as a user runs it, for the end-to-end tests: one subprocess helper for all of them."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def launch_env() -> dict[str, str]:
    """Wide lines (a console's wrapping would split the lines the tests read) and the live view's every-second
    polling (short jobs)."""
    return dict(os.environ, COLUMNS="250", MEGATRON_MNIST_PROGRESS_EVERY="1")


def launch(*args: str, timeout: int = 900, python_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run ``python launch.py ARGS`` from the repository root, as a user does, and wait for it."""
    return subprocess.run(
        [sys.executable, *python_flags, str(ROOT / "launch.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=launch_env(),
        cwd=ROOT,
    )
