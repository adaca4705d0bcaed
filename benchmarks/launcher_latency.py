"""Launcher latency: the dry run of every executor against ``import nemo.lightning``, in one run on this machine.

Each command runs ``--repeat`` times in a fresh interpreter; the median wall time is printed, with its ratio to
``python -c "import nemo.lightning"``. Each dry run is also run once under ``-X importtime`` to list which heavy
modules it imported: it must import none of nemo.lightning, megatron.core, nemo.collections.

    python benchmarks/launcher_latency.py --repeat 5

The Docker and Slurm dry runs check their engine first (image present, partition exists), so those must be up
(``tests/infra/docker_up.sh``, ``tests/infra/slurm_up.sh``); pass ``--executors local`` otherwise.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# megatron-core's import needs it where nvcc exists without a GPU (the package sets it too, for its own imports)
ENV = {**os.environ, "TORCH_CUDA_ARCH_LIST": os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0")}
HEAVY = ("nemo.lightning", "megatron.core", "nemo.collections")
DRY_RUNS = {
    "local": [],
    "docker": ["executor=docker", "executor.image=local/debian-python:bookworm", f"executor.python_env={sys.prefix}"],
    "slurm": ["executor=slurm", "executor.partition=debug", f"executor.python_env={sys.prefix}"],
}


def wall(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT, env=ENV)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def import_times(cmd: list[str]) -> dict[str, float]:
    """Module → cumulative import seconds, from ``-X importtime``; names keep their nesting indent."""
    run = subprocess.run(
        [cmd[0], "-X", "importtime", *cmd[1:]], check=True, capture_output=True, text=True, cwd=ROOT, env=ENV
    )
    times = {}
    for line in run.stderr.splitlines():
        fields = line.split("|")
        if line.startswith("import time:") and len(fields) == 3 and fields[1].strip().isdigit():
            times[fields[2].rstrip()] = int(fields[1]) / 1e6
    return times


def heavy_imports(cmd: list[str]) -> list[str]:
    return sorted({name.strip() for name in import_times(cmd)} & set(HEAVY))


def top_imports(cmd: list[str], n: int = 6) -> list[tuple[str, float]]:
    """The largest top-level packages by cumulative import time."""
    top_level = {name.strip(): t for name, t in import_times(cmd).items() if name.startswith(" ") and "." not in name}
    return sorted(top_level.items(), key=lambda kv: -kv[1])[:n]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--executors", default=",".join(DRY_RUNS), help="comma-separated, of local, docker, slurm")
    args = parser.parse_args()
    python = sys.executable
    reference = wall([python, "-c", "import nemo.lightning"], args.repeat)
    print(f"python -c 'import nemo.lightning': {reference:.2f} s (median of {args.repeat})")
    print(f"python -c 'import nemo_run':       {wall([python, '-c', 'import nemo_run'], args.repeat):.2f} s")
    print(f"python -c 'import torch':          {wall([python, '-c', 'import torch'], args.repeat):.2f} s")
    print("\n| dry run | wall (median) | / import nemo.lightning | heavy modules imported |\n|---|---|---|---|")
    for name in args.executors.split(","):
        cmd = [python, "launch.py", "pretrain", *DRY_RUNS[name], "--dryrun"]
        seconds = wall(cmd, args.repeat)
        heavy = heavy_imports(cmd)
        print(f"| {name} | {seconds:.2f} s | {seconds / reference:.2f} | {', '.join(heavy) or 'none'} |", flush=True)
    top = top_imports([python, "launch.py", "pretrain", "--dryrun"])
    print("\nlargest imports of the local dry run (cumulative): " + ", ".join(f"{n} {s:.2f} s" for n, s in top))


if __name__ == "__main__":
    main()
