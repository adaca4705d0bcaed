"""What a job does to its own process before it trains (megatron_mnist.job.process)."""

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import torch

MKL_CBWR_BRANCH = 1  # MKL's selector for the code-branch part of its reproducibility mode
MKL_CBWR_OFF, MKL_CBWR_AUTO = 1, 2  # MKL's numbers for MKL_CBWR unset and MKL_CBWR=AUTO

READ_MKLS_MODE = f"""
import ctypes, os, torch
import megatron_mnist.job
a = torch.randn(64, 784)
(a @ a.t()).sum()  # MKL's first call, when it reads MKL_CBWR
lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
print(lib.mkl_serv_cbwr_get({MKL_CBWR_BRANCH}))
"""


def mkl_mode_in_a_job(env: dict[str, str]) -> int:
    # a process of its own: MKL reads its mode once, and this test process has long since called it
    done = subprocess.run([sys.executable, "-c", READ_MKLS_MODE], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1])


def test_a_job_keeps_mkl_to_one_code_path_unless_the_user_chose_one():
    lib = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    assert hasattr(ctypes.CDLL(str(lib)), "mkl_serv_cbwr_get"), "this torch has no MKL: the test needs rewriting"
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    assert mkl_mode_in_a_job(env) == MKL_CBWR_AUTO
    assert mkl_mode_in_a_job(dict(env, MKL_CBWR="COMPATIBLE")) == 3  # the user's own setting wins


FREEZES = """
import gc, weakref
from megatron_mnist.job.process import freeze_heap

class Stage:
    pass

def old_garbage():  # a reference cycle that lived long enough to reach the oldest generation, then was dropped
    stage = Stage()
    stage.me = stage
    gc.collect()
    return weakref.ref(stage)

imported = old_garbage()
freeze_heap()  # the job's first: young generations only (the heap the imports left is not walked)
print(imported() is not None)
finished = old_garbage()  # a pipeline's finished stage, in one job
freeze_heap()  # the next stage's: a full collection of what is not frozen
print(finished() is None)
"""


def test_the_first_heap_freeze_skips_the_full_collection_and_the_next_stages_does_not():
    done = subprocess.run([sys.executable, "-c", FREEZES], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "True"]
