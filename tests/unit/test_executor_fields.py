"""Executor fields and names that would become shell code or a path outside their folder are refused before
anything is submitted; values that may legally hold anything are quoted (in-process, no engine needed)."""

import shlex
import sys
from pathlib import Path

import fiddle as fdl
import nemo_run as run
import pytest

from megatron_mnist import executors
from megatron_mnist.executors import check_fields
from megatron_mnist.executors.fields import FieldError
from megatron_mnist.executors.slurm_cluster import python_envs, quote_for_the_script
from megatron_mnist.job import builders
from megatron_mnist.launcher.recipe_checks import RecipeError, check_overrides, check_run_name
from megatron_mnist.names import InvalidName, check_name
from megatron_mnist_recipes.pretrain import pretrain

EVIL = "a$(touch PWNED)"


def slurm(**settings):
    later = ("env_vars", "comment", "srun_args", "qos", "container_env", "dependencies")
    later += () if settings.get("tunnel") == "ssh" else ("job_dir",)
    fields = {k: settings.pop(k) for k in list(settings) if k in later}  # executor fields, set as the CLI sets them
    executor = fdl.build(executors.slurm(**settings))
    for key, value in fields.items():
        setattr(executor.tunnel if key == "job_dir" else executor, key, value)
    return executor


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"account": EVIL}, "executor.account='a$(touch PWNED)' is not allowed: expected a name"),
        ({"partition": "gpu;touch x"}, "executor.partition="),
        ({"qos": "normal`id`"}, "executor.qos="),
        ({"time": "banana"}, "executor.time='banana' is not allowed: expected a Slurm time limit"),
        ({"nodes": 0}, "executor.nodes=0 is not allowed: expected a positive integer"),
        ({"job_dir": "/tmp/$(id)"}, "executor.job_dir='/tmp/$(id)' is not allowed: expected a path"),
        ({"job_dir": "/tmp/a b"}, "executor.job_dir='/tmp/a b'"),
        ({"container_image": "img;rm -rf /"}, "executor.container_image="),
        ({"container_image": "nvcr.io/x:1", "container_mounts": ["/data:/data,/etc:/etc"]}, "container_mounts"),
        ({"container_image": "nvcr.io/x:1", "container_mounts": ["/data"]}, "HOST:CONTAINER"),
        ({"comment": "ok\nrm -rf ~"}, "executor.comment='ok\\nrm -rf ~' is not allowed: expected one line"),
        ({"env_vars": {"A;B": "1"}}, "executor.env_vars['A;B']"),
        ({"tunnel": "ssh", "host": "h;id", "job_dir": "/j"}, "executor.host="),
        ({"tunnel": "ssh", "host": "h", "user": "$(id)", "job_dir": "/j"}, "executor.user="),
        ({"container_image": "nvcr.io/x:1", "container_env": ["A$(touch M)"]}, "executor.container_env='A$(touch M)'"),
        ({"container_env": ["A,B"]}, "executor.container_env='A,B' is not allowed: expected names of environment"),
        ({"reservation": "r;id"}, "executor.reservation='r;id' is not allowed: expected a name"),
        ({"dependencies": ["slurm_tunnel://x/1"]}, "executor.dependencies="),
        # a trailing newline: '$' would match before it (every rule is a full match)
        ({"account": "acct\n"}, "executor.account='acct\\n' is not allowed"),
        ({"partition": "debug\n"}, "executor.partition="),
        ({"time": "10\n"}, "executor.time="),
        ({"container_image": "img:1\n"}, "executor.container_image="),
        ({"tunnel": "ssh", "host": "h\n", "job_dir": "/j"}, "executor.host="),
        ({"tunnel": "ssh", "host": "h", "user": "u\n", "job_dir": "/j"}, "executor.user="),
        ({"job_dir": "/tmp/x\n"}, "executor.job_dir="),
        ({"env_vars": {"A\n": "1"}}, "executor.env_vars['A\\n']"),
    ],
)
def test_slurm_fields_that_would_be_code_are_refused(settings, message):
    with pytest.raises(FieldError) as e:
        check_fields(slurm(**settings))
    assert message in str(e.value) and "\n" not in str(e.value).replace("\\n", "")


@pytest.mark.parametrize("time", ["30", "10:00", "01:00:00", "2-00", "2-12:30", "2-12:30:00", "UNLIMITED"])
def test_slurm_time_formats_pass(time):
    check_fields(slurm(time=time, account="proj_a-1", partition="gpu.x", qos="normal"))


def test_slurm_values_that_may_hold_anything_are_quoted():
    executor = slurm(python_env="/opt/envs/my env;touch PWNED", comment=EVIL, env_vars={"MARK": "$(touch PWNED)"},
                     srun_args=["--mpi=pmix", "--x=$(touch PWNED)"])  # fmt: skip
    check_fields(executor)  # a comment is quoted by NeMo-Run's #SBATCH line; env values, srun args, python_env by us
    quote_for_the_script(executor)
    quote_for_the_script(executor)  # once only
    assert executor.env_vars == {"MARK": shlex.quote("$(touch PWNED)")}
    # each srun argument reaches srun as itself (the script's shell unquotes it), never as code
    assert executor.srun_args == ["--mpi=pmix", "'--x=$(touch PWNED)'"]
    assert shlex.split(" ".join(executor.srun_args)) == ["--mpi=pmix", "--x=$(touch PWNED)"]
    assert executor.setup_lines == "source '/opt/envs/my env;touch PWNED/bin/activate'"
    assert python_envs(executor) == ["/opt/envs/my env;touch PWNED"]


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"image": "img$(id)"}, "executor.image="),
        ({"volumes": ["/tmp:/x;y"]}, "executor.volumes='/tmp:/x;y'"),
        ({"volumes": ["/tmp"]}, "HOST:CONTAINER"),
        ({"env": {"A-B": "1"}}, "executor.env['A-B']"),
        ({"shm_size": "8g; rm"}, "executor.shm_size="),
    ],
)
def test_docker_fields_are_checked(settings, message):
    with pytest.raises(FieldError) as e:
        check_fields(fdl.build(executors.docker(**settings)))
    assert message in str(e.value)


def test_docker_python_env_must_be_a_venv():
    with pytest.raises(ValueError, match="executor.python_env='/nope' is not a virtual environment"):
        executors.docker(python_env="/nope")
    check_fields(fdl.build(executors.docker(python_env=sys.prefix, env={"MARK": EVIL})))  # values are data there


def test_docker_mounts_the_recipes_absolute_paths(tmp_path):
    executor = fdl.build(executors.docker(volumes=["/srv/data:/srv/data:ro"]))
    recipe = pretrain()
    recipe.log.log_dir = str(tmp_path / "runs")
    recipe.data.root = "/srv/data/mnist"  # under a read-only mount already there
    second = pretrain()
    second.log.log_dir = str(tmp_path / "runs" / "inner")  # inside the first: one mount serves both
    second.model.initial_ckpt_path = "/ckpts/run/checkpoints/x"
    executors.kind_of(executor).adapt_to_recipes(executor, [recipe, second])
    assert executor.volumes == [
        "/srv/data:/srv/data:ro",
        f"{tmp_path / 'runs'}:{tmp_path / 'runs'}",
        "/ckpts/run/checkpoints/x:/ckpts/run/checkpoints/x:ro",
    ]
    relative = pretrain()  # log_dir "runs": inside the job directory, which NeMo-Run mounts
    before = list(executor.volumes)
    executors.kind_of(executor).adapt_to_recipes(executor, [relative])
    assert executor.volumes == before


@pytest.mark.parametrize(
    "name", ["", ".", "..", "../escape", "a/b", "-x", "x" * 101, "a b", "a$(id)", None, 3, "evil\n", "a\nb"]
)
def test_names_that_are_paths_or_code_are_refused(name):
    with pytest.raises(InvalidName):
        check_name(name, "log.name")


@pytest.mark.parametrize("code", [*range(0x20), 0x7F])
def test_no_control_character_passes_any_name_or_field_rule_anywhere_in_a_value(code):
    # before, 'evil\n' passed the name rule ('$' matches before a final newline) and a Slurm dry run ran shell
    from megatron_mnist.executors import fields

    char = chr(code)
    rules = [fields.NAME, fields.HOST, fields.USER, fields.IMAGE, fields.SAFE_PATH, fields.ENV_KEY,
             fields.SLURM_TIME, fields.SHM_SIZE]  # fmt: skip
    for base in ("ok", "10"):  # each passes some of the rules as it is
        for value in (f"{base}{char}", f"{char}{base}", f"{base[0]}{char}{base[1:]}"):
            with pytest.raises(InvalidName):
                check_name(value, "--name")
            for rule in rules:
                assert not rule.fullmatch(value), (rule.pattern, value)


@pytest.mark.parametrize("name", ["pretrain", "run.2", "A_b-3", "x" * 100])
def test_plain_names_pass(name):
    check_name(name, "log.name")


def test_run_name_of_a_recipe_and_the_job_side_check():
    recipe = pretrain()
    check_run_name(recipe)
    recipe.log.name = ".."
    with pytest.raises(InvalidName, match=r"log.name='\.\.' is not a valid name"):
        check_run_name(recipe)
    # the Python API: a recipe composed in Python and run without the launcher stops in the job, before any folder
    with pytest.raises(InvalidName):
        builders.logger(name="../escape", log_dir=str(Path.cwd()))


def test_an_empty_override_is_one_line():
    with pytest.raises(RecipeError, match=r"data.root= has no value: give one, or data.root=None to unset it"):
        check_overrides(pretrain(), ["data.root="])


def test_local_executor_fields():
    check_fields(run.LocalExecutor(env_vars={"OK_1": "$(anything) is data"}))
    with pytest.raises(FieldError):
        check_fields(run.LocalExecutor(env_vars={"1BAD": "x"}))


def test_the_local_job_runs_this_interpreter_whatever_env_vars_are_given():
    # before, executor.env_vars={...} replaced the factory's PATH and the job ran the system Python
    this_bin = str(Path(sys.executable).parent)
    for given in ({}, {"MARK": "x"}, {"PATH": "/usr/bin:/bin"}):
        executor = fdl.build(executors.local())
        executor.env_vars = dict(given)
        executors.kind_of(executor).adapt_to_recipes(executor, [])
        executors.kind_of(executor).adapt_to_recipes(executor, [])  # once only
        path = executor.env_vars["PATH"].split(":")
        assert path[0] == this_bin and path.count(this_bin) == 1
        assert executor.env_vars.get("MARK") == given.get("MARK")
        if "PATH" in given:
            assert path[1:] == ["/usr/bin", "/bin"]


def test_every_kind_in_the_registry_builds_and_recognises_its_executor():
    assert set(executors.FACTORIES) == set(executors.KINDS) == {"local", "docker", "slurm"}
    for name, kind in executors.KINDS.items():
        settings = {"python_env": sys.prefix} if name == "docker" else {}
        executor = fdl.build(kind.factory(**settings))
        assert type(executor) is kind.executor_type
        assert executors.kind_of(executor) is kind
        per_node, nodes, _, sees_local_files = kind.shape(executor)
        assert (per_node, nodes, sees_local_files) == (1, 1, True)
        kind.check_fields(executor)


def test_an_executor_of_another_kind_is_refused_before_anything_is_guessed():
    # before the registry, an unknown kind fell through to "this machine" and had its paths checked here
    from megatron_mnist.launcher.submission import SubmissionError, check_submission

    class ElsewhereExecutor(run.LocalExecutor):  # a NeMo-Run executor class of no registered kind
        pass

    executor = ElsewhereExecutor()
    with pytest.raises(FieldError, match="ElsewhereExecutor is not an executor this launcher offers"):
        check_fields(executor)
    with pytest.raises(SubmissionError, match="executor= one of local, docker, slurm"):
        check_submission("t", executor, {"t": pretrain(name="t")})


def test_a_new_kind_is_one_module_and_one_registry_entry(monkeypatch):
    # what a new kind provides is all the launcher asks of it: here a kind whose executor is a LocalExecutor subclass
    from megatron_mnist.executors.base import ExecutorKind
    from megatron_mnist.launcher.submission import check_submission, executor_shape

    class FourRanks(run.LocalExecutor):
        pass

    prepared = []
    kind = ExecutorKind(
        name="four",
        executor_type=FourRanks,
        factory=lambda: run.Config(FourRanks),
        shape=lambda executor: (4, 1, None, True),
        check_fields=lambda executor: None,
        adapt_to_recipes=lambda executor, recipes: prepared.append(len(recipes)),
    )
    monkeypatch.setitem(executors.KINDS, "four", kind)
    executor = FourRanks()
    assert executor_shape(executor) == (4, 1, None, True)
    check_submission("t", executor, {"t": pretrain(name="t")}, skip_checks=True)
    assert prepared == [1]
