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
HEAVY = ("nemo.lightning", "megatron.core", "nemo.collections", "torch", "leptonai")
DRY_RUNS = {
    "local": [],
    "docker": ["executor=docker", "executor.image=local/debian-python:bookworm", f"executor.python_env={sys.prefix}"],
    "slurm": ["executor=slurm", "executor.partition=debug", f"executor.python_env={sys.prefix}"],
}


def walls(cmd: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT, env=ENV)
        times.append(time.perf_counter() - t0)
    return sorted(times)


def wall(cmd: list[str], repeat: int) -> float:
    return statistics.median(walls(cmd, repeat))


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
    # -X importtime also lists an import that was attempted and refused (lean_nemo_run holds torch back): ~0 s
    return sorted({name.strip() for name, seconds in import_times(cmd).items() if seconds > 0.001} & set(HEAVY))


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
    # the state a user's checkout is in after its first command: Python has written the bytecode of our modules
    # (this workplace sets PYTHONDONTWRITEBYTECODE, which would leave ~0.05 s of compiling in every command)
    subprocess.run([python, "-m", "compileall", "-q", "src", "recipes", "launch.py"], check=True, cwd=ROOT)
    reference = wall([python, "-c", "import nemo.lightning"], args.repeat)
    print(f"python -c 'import nemo.lightning': {reference:.2f} s (median of {args.repeat})")
    print(f"python -c 'import nemo_run':       {wall([python, '-c', 'import nemo_run'], args.repeat):.2f} s")
    print(f"python -c 'import torch':          {wall([python, '-c', 'import torch'], args.repeat):.2f} s")
    print("\n| command | wall min / median / max | median / import nemo.lightning | heavy modules imported |")
    print("|---|---|---|---|")
    commands = {
        f"pretrain --dryrun ({name})": ["pretrain", *DRY_RUNS[name], "--dryrun"] for name in args.executors.split(",")
    }
    commands.update({"--help": ["--help"], "check pretrain": ["check", "pretrain"], "list": ["list"]})
    # round robin (every command once, then again): this machine's speed drifts by ±20% over a minute, which would
    # otherwise land on whichever command ran then
    cmds = {name: [python, "launch.py", *argv] for name, argv in commands.items()}
    times = {name: [] for name in cmds}
    for _ in range(args.repeat):
        for name, cmd in cmds.items():
            times[name] += walls(cmd, 1)
    for name, cmd in cmds.items():
        times[name].sort()
        seconds = statistics.median(times[name])
        heavy = ", ".join(heavy_imports(cmd)) or "none"
        spread = f"{times[name][0]:.2f} / **{seconds:.2f}** / {times[name][-1]:.2f} s"
        print(f"| `{name}` | {spread} | {seconds / reference:.2f} | {heavy} |", flush=True)
    top = top_imports([python, "launch.py", "pretrain", "--dryrun"])
    print("\nlargest imports of the local dry run (cumulative): " + ", ".join(f"{n} {s:.2f} s" for n, s in top))


if __name__ == "__main__":
    main()
