"""A few steps of every engine, precision and mode on one GPU, in one process (one import of the stack): a first
look before the GPU suite, which runs each through launch.py. Prints one line per case and its error, if any.

    bash tests/gpu/run_on_device.sh --run python3 tests/gpu/smoke.py [CASE ...]
"""

import faulthandler
import sys
import tempfile
import time
import traceback
from pathlib import Path

import fiddle as fdl

from megatron_mnist_recipes.predict import predict
from megatron_mnist_recipes.pretrain import pretrain

CASES = {  # name: (trainer settings, steps)
    "megatron-bf16": ({"loop": "megatron"}, 60),
    "megatron-bf16-more": ({"loop": "megatron"}, 90),  # the same run continued: a resume from torch_dist
    "graph-bf16": ({"loop": "megatron", "cuda_graph": True}, 60),
    "graph-bf16-more": ({"loop": "megatron", "cuda_graph": True}, 90),
    "megatron-32": ({"loop": "megatron", "precision": "32"}, 40),
    "megatron-16": ({"loop": "megatron", "precision": "16-mixed"}, 40),
    "lightning-32": ({"precision": "32"}, 40),
    "lightning-16": ({"precision": "16-mixed"}, 40),
    "predict-megatron": None,
}


def reset():
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from gpu_pipeline import reset_megatron_state

    reset_megatron_state()


def main():
    faulthandler.dump_traceback_later(500, exit=True)
    log_dir = tempfile.mkdtemp(prefix="smoke-")
    wanted = sys.argv[1:] or list(CASES)
    for name in wanted:
        started = time.perf_counter()
        try:
            if CASES[name] is None:
                recipe = predict(checkpoint=f"{log_dir}/megatron-bf16", task="pretrain", name=name, log_dir=log_dir)
                recipe.trainer.loop = "megatron"
            else:
                settings, steps = CASES[name]
                recipe = pretrain(name=name.removesuffix("-more"), log_dir=log_dir, max_steps=steps)
                recipe.trainer.val_check_interval = 20
                recipe.trainer.log_every_n_steps = 1
                recipe.trainer.enable_progress_bar = False
                for key, value in settings.items():
                    setattr(recipe.trainer, key, value)
            fdl.build(recipe)()
            print(f"SMOKE {name}: ok in {time.perf_counter() - started:.1f} s", flush=True)
        except Exception as e:  # noqa: BLE001  every case gets its line
            print(f"SMOKE {name}: FAILED {type(e).__name__}: {e}", flush=True)
            traceback.print_exc()
        finally:
            reset()


if __name__ == "__main__":  # Megatron's checkpoint writer re-imports __main__
    main()
