"""Recipes exported by NeMo-Run's --to-yaml / --to-toml / --to-json come back equal through ``load_recipe``."""

import subprocess
import sys

import pytest
from rich.console import Console

from megatron_mnist.job.api import predict as predict_fn
from megatron_mnist.job.api import train
from megatron_mnist.launcher.config_files import ConfigFileError, load_recipe
from megatron_mnist.launcher.nemo_run_private import serialize_configuration as _serialize_configuration
from megatron_mnist_recipes.finetune import finetune
from megatron_mnist_recipes.predict import predict
from megatron_mnist_recipes.pretrain import pretrain


@pytest.mark.parametrize("fmt", ["yaml", "toml", "json"])
@pytest.mark.parametrize("factory, target", [(pretrain, train), (finetune, train), (predict, predict_fn)])
def test_every_recipe_round_trips_through_every_format(tmp_path, fmt, factory, target):
    recipe = factory()
    recipe.trainer.max_steps = 7  # an override travels too
    if hasattr(recipe, "optim"):
        recipe.optim.lr = 3e-4
    path = tmp_path / f"recipe.{fmt}"
    # the very function NeMo-Run's --to-yaml/--to-toml/--to-json call
    _serialize_configuration(recipe, **{f"to_{f}": str(path) if f == fmt else None for f in ("yaml", "toml", "json")},
                             console=Console(quiet=True))  # fmt: skip
    loaded = load_recipe(str(path), target)
    assert loaded == recipe
    # values that name a registered factory ("pretrain") stay strings (NeMo-Run's own loader turns them into recipes)
    assert loaded.model.task == recipe.model.task and isinstance(loaded.log.name, str)


def test_files_that_are_not_this_commands_recipe_are_one_line(tmp_path):
    path = tmp_path / "p.yaml"
    _serialize_configuration(pretrain(), to_yaml=str(path), to_toml=None, to_json=None, console=Console(quiet=True))
    with pytest.raises(ConfigFileError, match=r"holds 'megatron_mnist.job.api.train', not a recipe of .*api.predict"):
        load_recipe(str(path), predict_fn)
    (tmp_path / "bad.yaml").write_text("trainer: [unclosed\n")
    with pytest.raises(ConfigFileError, match=r"bad.yaml is not valid yaml"):
        load_recipe(str(tmp_path / "bad.yaml"), train)
    with pytest.raises(ConfigFileError, match=r"missing.yaml: No such file"):
        load_recipe(str(tmp_path / "missing.yaml"), train)
    path.write_text(path.read_text().replace("megatron_mnist.job.builders.trainer", "megatron_mnist.job.builders.nope"))
    with pytest.raises(ConfigFileError, match=r"trainer._target_='megatron_mnist.job.builders.nope' is not allowed"):
        load_recipe(str(path), train)
    (tmp_path / "binary.yaml").write_bytes(b"\x00\xff\xfe\x80")
    with pytest.raises(ConfigFileError, match=r"binary.yaml is not a text file"):
        load_recipe(str(tmp_path / "binary.yaml"), train)


@pytest.mark.parametrize("where", ["top", "nested", "deep"])
def test_a_file_may_name_only_the_recipes_callables_and_nothing_else_is_imported(tmp_path, monkeypatch, where):
    # a recipe file is code: before, only the top-level _target_ was checked, and `resume: {_target_:
    # subprocess.getoutput, cmd: ...}` ran in the job. Now no other callable is even imported.
    marker = tmp_path / "IMPORTED"
    (tmp_path / "mm_hostile.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef f(**kw): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "p.yaml"
    _serialize_configuration(pretrain(), to_yaml=str(path), to_toml=None, to_json=None, console=Console(quiet=True))
    text = path.read_text()
    if where == "top":
        text = text.replace("_target_: megatron_mnist.job.api.train", "_target_: mm_hostile.f", 1)
        expected = r"holds 'mm_hostile.f', not a recipe of megatron_mnist.job.api.train"
    elif where == "nested":
        text = text.replace("_target_: megatron_mnist.job.builders.resume", "_target_: mm_hostile.f")
        expected = r"resume._target_='mm_hostile.f' is not allowed: a recipe file may name only"
    else:  # a config inside a builder's argument
        text = text.replace("  task: pretrain", "  task:\n    _target_: subprocess.getoutput\n    cmd: touch M")
        expected = r"model.task._target_='subprocess.getoutput' is not allowed"
    path.write_text(text)
    with pytest.raises(ConfigFileError, match=expected):
        load_recipe(str(path), train)
    assert not marker.exists()


def test_a_recipe_saved_before_the_launcher_job_split_still_loads(tmp_path):
    # NeMo-Run's saved experiments and --to-yaml files name functions by module path; these named the flat layout
    from megatron_mnist.launcher import moved_modules

    moved_modules.install()
    path = tmp_path / "old.yaml"
    _serialize_configuration(pretrain(), to_yaml=str(path), to_toml=None, to_json=None, console=Console(quiet=True))
    old = path.read_text().replace("megatron_mnist.job.", "megatron_mnist.")
    assert "megatron_mnist.builders.trainer" in old
    path.write_text(old)
    assert load_recipe(str(path), train) == pretrain()


def test_a_script_of_the_recipes_old_name_still_imports(tmp_path):
    # before 2026-12-04 the recipes installed as the top-level `recipes`; run away from the checkout, where no
    # `recipes/` folder is on the path, the old name is the moved-modules table's alias of the new package
    code = (
        "from megatron_mnist.launcher import moved_modules; moved_modules.install()\n"
        "from recipes.pretrain import pretrain\n"
        "import megatron_mnist_recipes.pretrain as today\n"
        "assert pretrain is today.pretrain\n"
        "print(pretrain().log.name)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["pretrain"]
