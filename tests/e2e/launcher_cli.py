"""``launch.py`` as a user runs it, for the end-to-end tests: one subprocess helper for all of them."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def launch(*args: str, timeout: int = 900, python_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run ``python launch.py ARGS`` from the repository root; wide lines (a console's wrapping would split the
    lines the tests read) and the live view's every-second polling (short jobs)."""
    env = dict(os.environ, COLUMNS="250", MEGATRON_MNIST_PROGRESS_EVERY="1")
    return subprocess.run(
        [sys.executable, *python_flags, str(ROOT / "launch.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )
