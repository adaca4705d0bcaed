"""Before submitting: the checkpoint a recipe starts from (or resumes) has the weights it takes, in its sizes."""

import shutil
from pathlib import Path

import pytest

from megatron_mnist.checkpoint import load_model_weights
from megatron_mnist.checkpoint_paths import CONFIG_HEADS, TASK_CONFIGS, checkpoint_model, resolve_checkpoint
from megatron_mnist.model.config import CONFIGS
from megatron_mnist.recipe_checks import RecipeError, check_recipe
from recipes.finetune import finetune
from recipes.predict import predict
from recipes.pretrain import pretrain

CHECKPOINT = Path(__file__).resolve().parents[1] / "fixtures" / "gpu_resumed_checkpoint"
LOG_DIR = "/nonexistent/runs"  # no run of these names to resume


def test_the_heads_the_check_knows_are_the_model_configs():
    for config in CONFIGS.values():
        heads = {name for name, has in (("image_decoder", config.has_decoder),
                                        ("digit_classifier", config.has_classifier)) if has}  # fmt: skip
        assert CONFIG_HEADS[config.__name__] == heads
    assert TASK_CONFIGS == {task: config.__name__ for task, config in CONFIGS.items()}


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
    check_recipe(recipe)
    recipe.model.hidden_size = 128
    with pytest.raises(RecipeError, match=r"the run being resumed \(.*pretrain\) holds a model with hidden_size=64"):
        check_recipe(recipe)
    recipe.model.hidden_size, recipe.model.task = 64, "finetune_both"
    with pytest.raises(RecipeError, match=r"holds a PretrainConfig model, but model.task=finetune_both"):
        check_recipe(recipe)


def _with(recipe, **model):
    for key, value in model.items():
        setattr(recipe.model, key, value)
    return recipe
