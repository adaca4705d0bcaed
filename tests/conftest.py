import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import megatron_mnist  # noqa: E402, F401  (first: it sets what megatron-core's import needs where nvcc has no GPU)


def pytest_configure(config):
    # NeMo-Run keeps experiments under NEMORUN_HOME (default ~/.nemo_run): keep tests out of the user's.
    os.environ.setdefault("NEMORUN_HOME", str(ROOT / ".pytest_cache" / "nemorun-home"))
