"""megatron-mnist: NeMo-Run recipes and a launcher for a Megatron MNIST autoencoder / classifier.

Importing this package is cheap on purpose (no torch, NeMo or Megatron): recipes and the launcher compose
configs from it, and only the node that runs a job imports the training stack.
"""

__version__ = "0.1.0"

import os as _os
import shutil as _shutil

# megatron-core's import asks torch for the CUDA arch list, which crashes on a machine that has nvcc but no GPU
# (a CI runner, a login node). Give it a value there; where a GPU exists, leave the choice to the user.
if "TORCH_CUDA_ARCH_LIST" not in _os.environ and _shutil.which("nvcc") and not _os.path.exists("/dev/nvidiactl"):
    _os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"


def __getattr__(name: str):
    # `from megatron_mnist import submit`: the Python API's entry point, imported on first use (it imports NeMo-Run,
    # which a job that only trains does not need)
    if name in ("submit", "SubmissionError", "TaskFailed", "TaskResult"):
        from megatron_mnist.launcher import submission

        return getattr(submission, name)
    raise AttributeError(f"module 'megatron_mnist' has no attribute {name!r}")
