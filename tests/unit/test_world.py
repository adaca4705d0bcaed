"""The ranks a launcher started, as the recipe reads them, and what follows from them."""

import os
import subprocess
import sys
import time

import pytest

from megatron_mnist.job.world import World, launcher_world
from megatron_mnist.launcher.recipe_checks import RecipeError, check_recipe
from megatron_mnist.run_dirs import claim_run_dir
from megatron_mnist_recipes.pretrain import pretrain


@pytest.mark.parametrize(
    "env, world",
    [
        ({}, World(1, 1)),
        ({"LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "2", "RANK": "1"}, World(2, 1)),
        ({"LOCAL_WORLD_SIZE": "4", "WORLD_SIZE": "8"}, World(4, 2)),
        # srun-launched ranks: a task of a step
        ({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "2", "SLURM_NNODES": "2", "SLURM_NTASKS_PER_NODE": "1"}, World(1, 2)),
        ({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "6", "SLURM_NNODES": "2", "SLURM_NTASKS_PER_NODE": "3(x2)"},
         World(3, 2)),
        # torchrun inside a Slurm step: torchrun's ranks count (as Lightning sees them)
        ({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "2", "SLURM_NNODES": "2", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "4"},
         World(2, 2)),
        ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1", "SLURM_NNODES": "1"}, World(1, 1)),  # the batch script itself
    ],
)  # fmt: skip
def test_launcher_world(env, world):
    assert launcher_world(env) == world


def test_the_default_global_batch_is_one_micro_batch_per_rank(monkeypatch):
    from megatron_mnist.job.builders import mnist_data

    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert mnist_data(micro_batch_size=32).global_batch_size == 64
    assert mnist_data(micro_batch_size=32, global_batch_size=128).global_batch_size == 128


def test_trainer_sizes_must_match_what_the_executor_starts():
    recipe = pretrain()
    check_recipe(recipe, ranks=(2, 2))  # unset: they follow the executor
    recipe.trainer.devices = 2
    with pytest.raises(RecipeError, match=r"trainer.devices=2 but the executor starts 1 \(executor.ntasks_per_node\)"):
        check_recipe(recipe, ranks=(1, 1))
    recipe.trainer.devices, recipe.data.global_batch_size = None, 96
    with pytest.raises(RecipeError, match=r"global_batch_size=96 is not a multiple of .*=64 × 4 data-parallel"):
        check_recipe(recipe, ranks=(2, 2))


# a rank claims, says where, and lives (holding its claim) until its stdin closes
CLAIM = (
    "import sys; from megatron_mnist.run_dirs import claim_run_dir; "
    "print(claim_run_dir(sys.argv[1], 'r'), flush=True); sys.stdin.read()"
)


def test_the_ranks_of_one_launch_share_a_run_dir_and_another_launch_gets_its_own(tmp_path):
    launch = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29511", "TORCHELASTIC_RUN_ID": "x"}

    def rank(r: int, **env) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", CLAIM, str(tmp_path)],
            env={**os.environ, **launch, **env, "RANK": str(r)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    follower = rank(1)  # may start before its rank 0: it waits for it
    time.sleep(0.5)
    # another live run holds `r`: this launch's rank 0 takes r-2 and its rank 1 must follow it there
    other_run = claim_run_dir(str(tmp_path), "r")
    leader = rank(0)
    assert leader.stdout.readline().startswith(f"{tmp_path / 'r'} is in use by a running job")
    assert leader.stdout.readline().strip() == str(tmp_path / "r-2")
    assert follower.communicate(timeout=60)[0].strip() == str(tmp_path / "r-2")
    assert other_run == str(tmp_path / "r")
    leader.kill()


def test_a_run_whose_name_is_in_use_never_takes_another_runs_folder(tmp_path, monkeypatch):
    # before: a finished `col-2` (its own run) was where the second of two concurrent `col` runs went: it resumed
    # col-2's checkpoint and tidied col-2's checkpoints away
    import fcntl

    from megatron_mnist import run_dirs

    monkeypatch.setattr(run_dirs, "_held", {})
    monkeypatch.setattr(run_dirs, "_asked", {})
    (tmp_path / "col-2" / "checkpoints").mkdir(parents=True)  # a finished run, not running: no lock held
    (tmp_path / ".col-2.lock").write_text("")
    live = os.open(tmp_path / ".col.lock", os.O_RDWR | os.O_CREAT)  # a live run of `col` holds its folder
    fcntl.flock(live, fcntl.LOCK_EX)
    try:
        assert claim_run_dir(str(tmp_path), "col") == str(tmp_path / "col-3")
        assert run_dirs.renamed_from(tmp_path / "col-3") == str(tmp_path / "col")
    finally:
        os.close(live)
    assert sorted(p.name for p in (tmp_path / "col-2").iterdir()) == ["checkpoints"]  # untouched


def test_a_run_continues_only_below_max_steps_and_as_it_started(tmp_path):
    from megatron_mnist import run_record

    run_dir = tmp_path / "r"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "step=40-val_loss=0.0500-last.ckpt").write_bytes(b"")
    facts = {"engine": "lightning", "accelerator": "cpu", "precision": "32", "micro_batch_size": 64,
             "global_batch_size": 64}  # fmt: skip
    run_record.write(run_dir, facts)
    assert run_record.check_continuation(run_dir, facts, 60, True) == 40
    assert run_record.check_continuation(tmp_path / "new", facts, 60, True) is None
    for max_steps in (40, 10):  # before: NeMo's "no samples left to consume" traceback in the job
        with pytest.raises(
            run_record.RunError, match=f"has already trained 40 steps and trainer.max_steps={max_steps}"
        ):
            run_record.check_continuation(run_dir, facts, max_steps, True)
    for key, other in (("global_batch_size", 128), ("micro_batch_size", 32), ("precision", "bf16-mixed"),
                       ("accelerator", "gpu"), ("engine", "megatron")):  # fmt: skip
        with pytest.raises(run_record.RunError, match=f"was trained with {run_record.SAME_ON_RESUME[key]}="):
            run_record.check_continuation(run_dir, {**facts, key: other}, 60, True)
    with pytest.raises(run_record.RunError, match="resume.resume_if_exists=false but .* holds a run"):
        run_record.check_continuation(run_dir, facts, 60, False)
