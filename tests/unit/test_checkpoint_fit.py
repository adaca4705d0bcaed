"""Before submitting: the checkpoint a recipe starts from (or resumes) has the weights it takes, in its sizes."""

import fcntl
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from megatron_mnist.checkpoint_paths import checkpoint_model, last_checkpoint, resolve_checkpoint
from megatron_mnist.launcher.recipe_checks import RecipeError, check_recipe, check_run_folder
from megatron_mnist.model.config import CONFIGS
from megatron_mnist.model.spec import CONFIG_HEADS, TASKS
from megatron_mnist.model.weights import load_model_weights
from megatron_mnist.run_record import RunError
from megatron_mnist_recipes.finetune import finetune
from megatron_mnist_recipes.predict import predict
from megatron_mnist_recipes.pretrain import pretrain

CHECKPOINT = Path(__file__).resolve().parents[1] / "fixtures" / "gpu_resumed_checkpoint"
LOG_DIR = "/nonexistent/runs"  # no run of these names to resume


def test_every_task_builds_the_heads_its_spec_names():
    # model/spec.py is the one table: the configs' classes and the modules they build follow it
    assert set(CONFIGS) == set(TASKS)
    for task, spec in TASKS.items():
        config = CONFIGS[task]()
        assert type(config).__name__ == spec.config
        assert {name for name, _ in config.configure_model().named_children()} - {"trunk"} == spec.heads
        assert config.initial_ckpt_skip_keys_with_these_prefixes == list(spec.default_skip)
    assert CONFIG_HEADS == {spec.config: spec.heads for spec in TASKS.values()}


def test_one_rule_for_a_runs_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    for step, age in ((90, 200), (100, 100)):  # the newer one wins, whatever the names sort as
        shutil.copytree(CHECKPOINT, run / "checkpoints" / f"step={step}-last")
        os.utime(run / "checkpoints" / f"step={step}-last", (time.time() - age, time.time() - age))
    assert last_checkpoint(run) == resolve_checkpoint(run) == run / "checkpoints" / "step=100-last" / "weights"
    assert last_checkpoint(tmp_path / "nothing") is None


def test_the_report_reconstructs_with_the_models_own_modules():
    from megatron_mnist.data.dataset import MNISTCustom
    from megatron_mnist.report import reconstruct

    images = MNISTCustom(train=False).data[:64]
    weights = load_model_weights(resolve_checkpoint(CHECKPOINT))
    rebuilt = reconstruct(weights, images)
    assert rebuilt.shape == images.shape
    # the layers by hand (Linear, ReLU, Linear twice): what the report computed before it used the model's modules
    w = {k: v.float() for k, v in weights.items()}
    z = torch.relu(images.reshape(64, -1) @ w["trunk.0.weight"].T + w["trunk.0.bias"]) @ w["trunk.2.weight"].T
    z = z + w["trunk.2.bias"]
    by_hand = torch.relu(z @ w["image_decoder.0.weight"].T + w["image_decoder.0.bias"]) @ w["image_decoder.2.weight"].T
    torch.testing.assert_close(rebuilt.reshape(64, -1), by_hand + w["image_decoder.2.bias"])
    # and it reconstructs: better than the mean digit (this checkpoint trained 150 steps)
    assert float(((rebuilt - images) ** 2).mean()) < float(((images - images.mean(0)) ** 2).mean())


def test_the_context_names_the_model_and_its_size_and_the_weights_load_on_cpu():
    assert checkpoint_model(resolve_checkpoint(CHECKPOINT)) == ("PretrainConfig", 64)
    weights = load_model_weights(CHECKPOINT)  # saved by 2 GPUs, resumed and saved by 1, read without a GPU
    assert weights["image_decoder.2.weight"].shape == (784, 64)


def test_fitting_checkpoints_pass():
    check_recipe(
        finetune(pretrain_checkpoint=str(CHECKPOINT), log_dir=LOG_DIR)
    )  # the trunk comes from it, the classifier starts fresh
    check_recipe(predict(log_dir=LOG_DIR, checkpoint=str(CHECKPOINT), task="pretrain"))


@pytest.mark.parametrize(
    "recipe, message",
    [
        (lambda: _with(finetune(pretrain_checkpoint=str(CHECKPOINT), log_dir=LOG_DIR), hidden_size=32),
         r"holds a model with hidden_size=64, but model.hidden_size=32 \(set model.hidden_size=64"),
        (lambda: predict(log_dir=LOG_DIR, checkpoint=str(CHECKPOINT)),
         r"holds a PretrainConfig model without digit_classifier, which model.task=finetune takes from it"),
        (lambda: _with(finetune(pretrain_checkpoint=str(CHECKPOINT), log_dir=LOG_DIR),
                       initial_ckpt_skip_keys_with_these_prefixes=[]),
         r"without digit_classifier"),
    ],
)  # fmt: skip
def test_checkpoints_that_do_not_fit_are_one_line(recipe, message):
    with pytest.raises(RecipeError, match=message):
        check_recipe(recipe())


def test_a_run_resumed_with_other_sizes_is_stopped(tmp_path):
    run_dir = tmp_path / "pretrain" / "checkpoints" / "step=149-val_loss=0.0253-last"
    shutil.copytree(CHECKPOINT, run_dir)
    recipe = pretrain(log_dir=str(tmp_path))
    check_run_folder(recipe)
    recipe.model.hidden_size = 128
    with pytest.raises(RecipeError, match=r"the run being resumed \(.*pretrain\) holds a model with hidden_size=64"):
        check_run_folder(recipe)
    recipe.model.hidden_size, recipe.model.task = 64, "finetune_both"
    with pytest.raises(RecipeError, match=r"holds a PretrainConfig model, but model.task=finetune_both"):
        check_run_folder(recipe)
    recipe.model.task, recipe.trainer.max_steps = "pretrain", 149  # at its last checkpoint's step: nothing to train
    with pytest.raises(RunError, match=r"pretrain has already trained 149 steps and trainer.max_steps=149"):
        check_run_folder(recipe)


def test_a_run_folder_a_live_run_holds_is_not_the_one_a_new_run_continues(tmp_path):
    # the job takes NAME-N where a running job holds NAME (run_dirs.py): the check before submitting must not judge
    # the live run's progress as this run's (a second run of 30 steps was refused once the first passed step 30)
    run_dir = tmp_path / "pretrain" / "checkpoints" / "step=149-val_loss=0.0253-last"
    shutil.copytree(CHECKPOINT, run_dir)
    recipe = pretrain(log_dir=str(tmp_path), max_steps=149)
    lock = os.open(tmp_path / ".pretrain.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as a running job holds it
        check_run_folder(recipe)
    finally:
        os.close(lock)
    with pytest.raises(RunError, match=r"pretrain has already trained 149 steps"):  # the lock gone: a finished run
        check_run_folder(recipe)


def _with(recipe, **model):
    for key, value in model.items():
        setattr(recipe.model, key, value)
    return recipe
