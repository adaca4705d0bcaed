#!/usr/bin/env bash
# Run the GPU suite on a machine with CUDA GPUs whose image lacks NeMo (the device machine of this workplace; see
# ../shared/gpu/README.md): install the wheel kit if it is not installed yet, then `pytest tests/gpu`.
#   bash tests/gpu/run_on_device.sh [PYTEST ARGS]      e.g.  -k one_gpu    or    -k "every_gpu or n_gpus"
#   bash tests/gpu/run_on_device.sh --run COMMAND...   the same environment for another command (the benchmarks)
# The kit comes in two folders, each under one call's 64 MiB: install .whl in one call (INSTALL_ONLY=1), then run
# this with .whl2 in the next, while /tmp/site survives. Where NeMo is installed (a NeMo container, this project's
# venv on a GPU box) it simply runs the suite: `python -m pytest tests/gpu -m gpu`.
set -uo pipefail
cd "$(dirname "$0")/../.."
site=/tmp/site
for kit in .whl .whl2; do
  if [ -d "$kit" ] && ls "$kit"/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$kit"/*.whl \
      || exit 3
  fi
done
[ "${INSTALL_ONLY:-0}" = 1 ] && { echo "installed into $site"; exit 0; }
[ -d "$site/nemo" ] || python3 -c "import nemo" 2>/dev/null || { echo "no NeMo: install the kit first" >&2; exit 3; }
# the kit's packages first (they shadow the image's newer transformers/lightning); the numpy-2 shim; our source, the
# recipes under the name `pip install -e .` gives them (megatron_mnist_recipes, from recipes/)
names=/tmp/megatron-mnist-names
mkdir -p "$names" && ln -sfn "$PWD/recipes" "$names/megatron_mnist_recipes"
export PYTHONPATH="$site:$PWD/tests/gpu:$PWD/src:$names${PYTHONPATH:+:$PYTHONPATH}"
# megatron-core wants an arch list where nvcc exists; NVLink multicast off (see the device notes); stack dumps on
# hangs (SIGABRT from the suite's timeouts)
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1
export NEMORUN_HOME=${NEMORUN_HOME:-/tmp/gpu-suite-nemorun}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ "${1:-}" = --run ]; then shift; exec "$@"; fi
log=${OUT:-/tmp}/gpu_suite.log
python3 -m pytest tests/gpu -m gpu -v -s -p no:cacheprovider -o addopts="" "$@" 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"
