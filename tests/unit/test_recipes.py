import subprocess
import sys

import fiddle as fdl
import nemo_run as run
import pytest
import torch

from megatron_mnist import constraints
from megatron_mnist.job import builders
from megatron_mnist.job.api import predict as predict_fn
from megatron_mnist.job.api import train
from megatron_mnist_recipes.finetune import finetune
from megatron_mnist_recipes.pipeline import pipeline
from megatron_mnist_recipes.predict import predict
from megatron_mnist_recipes.pretrain import pretrain


def test_recipes_are_partials_of_train_with_config_fields():
    r = pretrain()
    assert isinstance(r, run.Partial) and r.__fn_or_cls__ is train
    for field in ("model", "data", "trainer", "optim", "log", "resume"):
        assert isinstance(getattr(r, field), run.Config), field
    assert r.model.task == "pretrain" and r.trainer.accelerator == "auto"
    assert predict().__fn_or_cls__ is predict_fn


def test_composition_in_python_as_a_user_writes_it():
    r = pretrain()
    r.trainer.max_steps = 20
    r.data.micro_batch_size = 32
    assert r.trainer.max_steps == 20 and r.data.micro_batch_size == 32
    assert pretrain().trainer.max_steps == 500  # a fresh recipe is untouched
    copy = fdl.build(r.data)  # building one field makes the real data module, nothing else
    assert copy.micro_batch_size == 32 and copy.global_batch_size == 32


def test_finetune_points_at_the_pretrain_run_and_starts_the_head_fresh():
    r = finetune(pretrain_checkpoint="runs/x/pretrain", task="finetune_both")
    assert r.model.initial_ckpt_path == "runs/x/pretrain"
    assert r.model.initial_ckpt_skip_keys_with_these_prefixes == ["digit_classifier"]
    assert r.model.task == "finetune_both"


def test_pipeline_stages_find_each_others_checkpoints():
    stages = pipeline(name="p", log_dir="out", max_steps=7)
    assert list(stages) == ["pretrain", "finetune", "predict"]
    assert stages["pretrain"].log.log_dir == "out/p" and stages["pretrain"].log.name == "pretrain"
    assert stages["finetune"].model.initial_ckpt_path == "out/p/pretrain"
    assert stages["predict"].model.initial_ckpt_path == "out/p/finetune"
    assert stages["finetune"].trainer.max_steps == 7


def test_composing_a_recipe_imports_no_training_stack():
    code = (
        "import sys; sys.path.insert(0, '.'); from megatron_mnist_recipes.pipeline import pipeline; pipeline(); "
        "print(sorted(m for m in ('nemo.lightning', 'megatron.core', 'nemo.collections') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bad_values_are_one_clear_line():
    with pytest.raises(ValueError, match=r"model.task='pretrian' is not one of pretrain, finetune, finetune_both"):
        builders.model_config(task="pretrian")
    with pytest.raises(ValueError, match=r"data.micro_batch_size=0 must be a positive integer"):
        builders.mnist_data(micro_batch_size=0)
    with pytest.raises(ValueError, match=r"trainer.accelerator='tpu' is not one of auto, gpu, cpu"):
        builders.resolve_accelerator("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="trainer.accelerator=gpu but this machine has no CUDA GPU"):
            builders.resolve_accelerator("gpu")


@pytest.mark.parametrize("key", sorted(constraints.CONSTRAINTS))
def test_each_value_constraint_has_one_home_read_before_submit_and_on_the_node(key):
    from megatron_mnist.errors import InputError
    from megatron_mnist.launcher.recipe_checks import check_recipe

    bad = -1 if key != "data.num_workers" else -2
    recipe = pretrain(name="c")
    section, field = key.split(".")
    setattr(getattr(recipe, section), field, bad)
    with pytest.raises(InputError) as on_the_node:
        constraints.check_value(key, bad)
    with pytest.raises(InputError) as before_submit:
        check_recipe(recipe, check_paths=False)
    assert type(before_submit.value) is type(on_the_node.value)  # the same error, raised by the same function
    assert str(before_submit.value) == str(on_the_node.value) == f"{key}={bad!r} {constraints.CONSTRAINTS[key][1]}"
    constraints.check_value(key, None)  # unset is fine


def test_the_rules_between_settings_and_ranks_have_one_home_read_before_submit_and_on_the_node():
    from megatron_mnist.errors import RecipeError
    from megatron_mnist.launcher.recipe_checks import check_recipe

    recipe = pretrain(name="c")
    recipe.data.global_batch_size = 96  # 64-digit micro-batches on 2 × 2 ranks: 1.5 micro-batches a rank
    with pytest.raises(RecipeError) as before_submit:
        check_recipe(recipe, ranks=(2, 2), check_paths=False)
    with pytest.raises(RecipeError) as on_the_node:  # what the strategies and the megatron loop call
        constraints.micro_batches_per_step(96, 64, 4)
    assert str(before_submit.value) == str(on_the_node.value)
    assert str(on_the_node.value) == "data.global_batch_size=96 is not a multiple of data.micro_batch_size=64 × 4 " \
        "data-parallel rank(s)"  # fmt: skip
    assert constraints.micro_batches_per_step(256, 64, 2) == 2  # accumulated: two micro-batches a rank
    assert constraints.global_batch_size(64, None, 4) == 256 and constraints.global_batch_size(64, 128, 4) == 128

    recipe = pretrain(name="c")
    recipe.trainer.devices = 2
    with pytest.raises(RecipeError, match=r"^trainer.devices=2 but the executor starts 1 \(executor.ntasks_per_node\)"):
        check_recipe(recipe, check_paths=False)
    with pytest.raises(RecipeError, match=r"^trainer.devices=2 but the launcher starts 1 \(executor.ntasks_per_node\)"):
        builders.trainer(devices=2)  # on the node: this process, started alone
    assert builders.trainer(devices=1, num_nodes=1).world_size == 1


def test_graph_mode_without_the_digits_on_the_gpu_is_refused_before_submit_and_on_the_node():
    from megatron_mnist.launcher.recipe_checks import RecipeError, check_recipe

    recipe = pretrain(name="g")
    recipe.trainer.loop, recipe.trainer.cuda_graph, recipe.trainer.accelerator = "megatron", True, "gpu"
    check_recipe(recipe, check_paths=False, executor_gpus=1)  # the digits on the GPU: fine
    recipe.data.device_resident = False
    with pytest.raises(RecipeError, match="needs data.device_resident=true"):
        check_recipe(recipe, check_paths=False, executor_gpus=1)
    with pytest.raises(ValueError, match="needs data.device_resident=true"):
        constraints.check_graph_mode("megatron", True, "gpu", "bf16-mixed", device_resident=False)


def test_graph_mode_with_fp16_loss_scaling_is_refused_before_submit_and_on_the_node():
    from megatron_mnist.launcher.recipe_checks import RecipeError, check_recipe

    recipe = pretrain(name="g")
    recipe.trainer.loop, recipe.trainer.cuda_graph, recipe.trainer.accelerator = "megatron", True, "gpu"
    recipe.trainer.precision = "bf16-mixed"
    check_recipe(recipe, check_paths=False, executor_gpus=1)  # bf16 needs no loss scaling: fine
    recipe.trainer.precision = "16-mixed"  # its loss scaler reads the gradients' overflow on the host every step
    with pytest.raises(RecipeError, match="trainer.cuda_graph=true with trainer.precision=16-mixed"):
        check_recipe(recipe, check_paths=False, executor_gpus=1)
    with pytest.raises(ValueError, match="trainer.cuda_graph=true with trainer.precision=16-mixed"):
        constraints.check_graph_mode("megatron", True, "gpu", "16-mixed")
