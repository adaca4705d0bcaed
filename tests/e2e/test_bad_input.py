"""Bad input stops the launcher before anything runs: one line naming the value and what was expected, status 2."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from launcher_cli import launch  # tests/e2e/launcher_cli.py

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["pretrain", "trainer.max_step=5"],
            "unknown override key 'trainer.max_step': did you mean trainer.max_steps?",
        ),
        (["pretrain", "trainer.max_steps=abc"], "trainer.max_steps='abc' is not an integer"),
        (["pretrain", "trainer.accelerator=tpu"], "trainer.accelerator='tpu' is not one of auto, gpu, cpu"),
        (["pretrain", "data.micro_batch_size=0"], "data.micro_batch_size=0 must be a positive integer"),
        (["pretrain", "trainer.max_steps=-3"], "trainer.max_steps=-3 must be a positive integer"),
        (["pretrain", "optim.lr=0"], "optim.lr=0.0 must be positive"),
        (
            ["pretrain", "data.micro_batch_size=32", "data.global_batch_size=48"],
            "data.global_batch_size=48 is not a multiple of data.micro_batch_size=32 × 1 data-parallel rank(s)",
        ),
        (
            ["pretrain", "executor.ntasks_per_node=2", "data.micro_batch_size=32", "data.global_batch_size=32"],
            "data.global_batch_size=32 is not a multiple of data.micro_batch_size=32 × 2 data-parallel rank(s)",
        ),
        (
            ["finetune", "model.initial_ckpt_path=/no/such/run"],
            "model.initial_ckpt_path='/no/such/run': checkpoint not found: /no/such/run",
        ),
        (["finetune", f"model.initial_ckpt_path={ROOT / 'tests'}"], "is not a checkpoint"),
        (["pretrain", "data.root=/tmp/no-mnist-here"], "data.root='/tmp/no-mnist-here' is not a directory"),
        (["pretrain", f"data.root={ROOT / 'tests'}"], "MNIST file not found"),
        (["pretrain", "--name", "a b"], "--name='a b' is not a valid name"),
        (
            ["predict", f"model.initial_ckpt_path={ROOT / 'tests' / 'fixtures' / 'gpu_resumed_checkpoint'}"],
            "holds a PretrainConfig model without digit_classifier, which model.task=finetune takes from it",
        ),
        (["pretrain", "trainer.devices=2"], "trainer.devices=2 but the executor starts 1 (executor.ntasks_per_node)"),
        (["pretrain", "runtime=120"], "unknown override key 'runtime'"),  # not mistaken for run.* (Run#604)
        (["pipeline", "--yes", "pretrain.trainer.max_stepz=1"], "pretrain: unknown override key 'trainer.max_stepz'"),
        (["pipeline", "--yes", "train.x=1"], "expected STAGE.KEY=VALUE with STAGE one of pretrain, finetune, predict"),
        (["pipeline", "--yes", "--name", ".."], "--name='..' is not a valid name"),
        (["pretrain", "executor=nosuch"], "executor='nosuch' is not one of local, docker, slurm"),
        (["pretrain", "executor.nosuch=1"], "unknown executor setting executor.nosuch for executor=local"),
        (["pretrain", "data.root="], "data.root= has no value: give one, or data.root=None to unset it"),
        (["pretrain", "log.name="], "log.name= has no value"),
        (["pretrain", "log.name=.."], "log.name='..' is not a valid name"),
        (["pretrain", "log.name=../escape"], "log.name='../escape' is not a valid name"),
        (["pretrain", "log.name=a/b"], "log.name='a/b' is not a valid name"),
        (
            ["pretrain", "log.name=" + "x" * 300],
            "is not a valid name: use letters, digits, '.', '_' and '-' (at most 100",
        ),
        (["pretrain", "--name", "../x"], "--name='../x' is not a valid name"),
        (["pretrain", "--name", "../x", "--dryrun"], "--name='../x' is not a valid name"),
        (["pretrain", "data.micro_batch_size=-3", "--dryrun"], "data.micro_batch_size=-3 must be a positive integer"),
        # NeMo-Run's parser errors (a CLIException, not a ValueError) came out as its own nested lines, exit 1
        (["finetune", "--factory", "finetune(task='pretrain')"], "Expected one of ('finetune', 'finetune_both')"),
        (["pretrain", "--sweep", "optim.lr=1e-3,abc"], "--sweep: optim.lr='abc' is not a number"),
        (["pretrain", "executor.ntasks_per_node=abc"], "executor.ntasks_per_node=abc: Failed to parse 'abc' as"),
        # the second round (security issue): each found only 15-20 s into the job, or never
        (["pretrain", "trainer.val_check_interval=0"], "trainer.val_check_interval=0 must be a positive integer"),
        (["pretrain", "trainer.limit_val_batches=-1"], "trainer.limit_val_batches=-1 must be a positive integer"),
        (["pretrain", "trainer.log_every_n_steps=0"], "trainer.log_every_n_steps=0 must be a positive integer"),
        (["pretrain", "data.val_size=8000"], "data.val_size=8000 must be between 1 and 7999"),
        (["pretrain", "optim.weight_decay=-0.1"], "optim.weight_decay=-0.1 must be 0 or more"),
        (["pretrain", "optim.adam_beta1=1.0"], "optim.adam_beta1=1.0 must be in [0, 1)"),
        (["pretrain", "optim.adam_beta2=-0.5"], "optim.adam_beta2=-0.5 must be in [0, 1)"),
        (["pretrain", "optim.adam_eps=nan"], "optim.adam_eps=nan must be positive (and finite)"),
        (["pretrain", "optim.lr=inf"], "optim.lr=inf must be positive (and finite)"),
        (["pretrain", "data.micro_batch_size=100000"], "data.micro_batch_size=100000 × 1 rank(s) is more than the 667"),
        (["pretrain", "log.log_dir=/proc/no/runs"], "log.log_dir='/proc/no/runs' is not writable"),
        (["pretrain", "log.name=a\nb"], "log.name='a\\nb' holds a control character: a value is one line"),
        (["pretrain", "--name=evil\n"], "--name='evil\\n' is not a valid name"),
        (["pretrain", "--name="], "--name='' is not a valid name"),
        (["pipeline", "--yes", "--name", "pl\n"], "--name='pl\\n' is not a valid name"),
        (["pretrain", "executor.ntasks_per_node=1\n"], "executor.ntasks_per_node='1\\n' holds a control character"),
        (["pretrain", "executor.ntasks_per_node="], "executor.ntasks_per_node= has no value"),
        (["pretrain", "executor=slurm", "executor.dependencies=['x']"], "executor.dependencies=['x'] is not allowed"),
        (["check", "pretrain", "--name", "a b"], "--name='a b' is not a valid name"),
        # repeated runs, precision and graph mode (issues 24, 25, 28)
        (["pretrain", "--detach"], "--detach needs an executor whose jobs outlive the launcher (executor=slurm)"),
        (
            ["pretrain", "trainer.accelerator=cpu", "trainer.precision=bf16-mixed"],
            "trainer.precision=bf16-mixed needs a GPU: on a CPU the recipe trains in fp32 (32)",
        ),
        (["pretrain", "trainer.cuda_graph=true"], "trainer.cuda_graph=true needs trainer.loop=megatron"),
        (
            ["pretrain", "trainer.loop=megatron", "trainer.cuda_graph=true", "trainer.accelerator=cpu"],
            "trainer.cuda_graph=true needs a GPU",
        ),
        (["pretrain", "trainer.loop=torch"], "trainer.loop='torch' is not one of lightning, megatron"),
        (["pretrain", "trainer.precision=64"], "trainer.precision='64' is not one of 32, bf16-mixed, 16-mixed"),
        (
            ["finetune", "model.initial_ckpt_skip_keys_with_these_prefixes=[digit_classifier]"],
            "model.initial_ckpt_skip_keys_with_these_prefixes='[digit_classifier]' is not a list: quote each string",
        ),
        (["pipeline", "--yes", "--loop", "torch"], "--loop='torch' is not one of lightning, megatron"),
    ],
)
def test_one_clear_line_and_nothing_runs(args, message, tmp_path):
    where = ["--log-dir", str(tmp_path)] if args[0] == "pipeline" else [f"log.log_dir={tmp_path}"]
    if any(a.startswith("log.log_dir=") for a in args):
        where = []
    result = launch(*args, *where, *([] if args[0] == "check" else ["--yes"]))
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert not list(tmp_path.iterdir())  # nothing written


def test_gpus_asked_where_there_are_none(tmp_path):
    if Path("/dev/nvidiactl").exists():
        pytest.skip("this machine has a GPU")  # CI machines have none: there the test runs
    result = launch("pretrain", "trainer.accelerator=gpu", f"log.log_dir={tmp_path}", "--yes")
    assert result.returncode == 2
    assert "trainer.accelerator=gpu but the job would get no GPU" in result.stderr


def test_an_unknown_recipe():
    result = launch("pretrian", "--yes")
    assert result.returncode == 2
    assert "No such command 'pretrian'" in result.stderr


def test_skip_checks_submits_what_the_checks_would_have_stopped(tmp_path):
    args = ["pretrain", "data.root=/tmp/no-mnist-here", "trainer.accelerator=cpu", f"log.log_dir={tmp_path}", "--yes"]
    checked = launch(*args)
    assert checked.returncode == 2 and "data.root='/tmp/no-mnist-here' is not a directory" in checked.stderr
    skipped = launch(*args, "--skip-checks")
    # submitted: the job itself meets the problem and fails (status 1), with its log tail
    assert skipped.returncode == 1, skipped.stdout[-2000:] + skipped.stderr[-2000:]
    output = skipped.stdout + skipped.stderr
    assert "pretrain: FAILED" in output and "data.root=/tmp/no-mnist-here is not a directory" in output


def test_a_run_name_never_leaves_its_folder_cli_and_yaml(tmp_path):
    # a user's folder: before, `log.name=..` made it the run folder and NeMo's logger moved out.log into run_0/
    work = tmp_path / "project"
    work.mkdir()
    (work / "out.log").write_text("keep me")
    for name in ("..", "../escape", ".", "a/b"):
        result = subprocess.run(
            [sys.executable, str(ROOT / "launch.py"), "pretrain", f"log.name={name}", "log.log_dir=.", "--yes"],
            capture_output=True, text=True, timeout=300, cwd=work, env=dict(os.environ, COLUMNS="200"),
        )  # fmt: skip
        assert result.returncode == 2 and f"log.name={name!r} is not a valid name" in result.stderr, result.stderr
    exported = tmp_path / "p.yaml"
    assert launch("pretrain", "log.name=ok", "--to-yaml", str(exported)).returncode == 0
    exported.write_text(exported.read_text().replace("name: ok", "name: ../escape"))
    from_file = launch("pretrain", "--yaml", str(exported), f"log.log_dir={work}", "--yes")
    assert from_file.returncode == 2 and "log.name='../escape' is not a valid name" in from_file.stderr
    assert sorted(p.name for p in work.iterdir()) == ["out.log"] and (work / "out.log").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml", "project"]  # no lock or run beside it


def test_truncated_data_is_found_before_submitting(tmp_path):
    from megatron_mnist.data.dataset import embedded_sample_root

    sample = embedded_sample_root()
    for case in ("gzip", "idx"):
        root = tmp_path / case
        root.mkdir()
        for f in sample.glob("*-ubyte*"):
            (root / f.name).write_bytes(f.read_bytes())
        victim = next(root.glob("train-images*"))
        if case == "gzip":  # a download cut short
            victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
        else:  # a valid header whose data is cut short
            import gzip

            raw = gzip.decompress(victim.read_bytes()) if victim.suffix == ".gz" else victim.read_bytes()
            victim.unlink()
            (root / "train-images-idx3-ubyte").write_bytes(raw[: len(raw) - 784])
        runs = tmp_path / f"runs-{case}"
        result = launch("pretrain", f"data.root={root}", f"log.log_dir={runs}", "--yes")
        assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
        assert f"data.root='{root}'" in result.stderr and "train-images-idx3-ubyte" in result.stderr
        assert ("cannot read" if case == "gzip" else "is truncated or corrupt") in result.stderr
        assert not runs.exists()


def test_a_recipe_file_that_names_other_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "M"
    exported = tmp_path / "p.yaml"
    assert launch("pretrain", f"log.log_dir={tmp_path / 'runs'}", "--to-yaml", str(exported)).returncode == 0
    text = exported.read_text()
    hostile = text.replace(
        "resume:\n  _target_: megatron_mnist.job.builders.resume\n  resume_if_exists: true",
        f"resume:\n  _target_: subprocess.getoutput\n  cmd: touch {marker}",
    )
    assert hostile != text
    exported.write_text(hostile)
    for command in (["pretrain", "--yaml", str(exported), "--dryrun"], ["pretrain", "--yaml", str(exported), "--yes"],
                    ["check", "pretrain", "--yaml", str(exported)]):  # fmt: skip
        result = launch(*command)
        assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
        assert "resume._target_='subprocess.getoutput' is not allowed" in result.stderr
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\x00\xff\xfe\x80")
    result = launch("pretrain", "--yaml", str(binary), "--yes")
    assert result.returncode == 2 and f"--yaml {binary} is not a text file" in result.stderr
    assert not marker.exists() and not (tmp_path / "runs").exists()


def test_a_dry_run_creates_nothing(tmp_path):
    home = tmp_path / "nemo_home"
    home.mkdir()
    env = dict(os.environ, NEMORUN_HOME=str(home), COLUMNS="250")
    for args in (["pretrain", "--dryrun"], ["pipeline", "--dryrun", "--log-dir", str(tmp_path / "runs")],
                 ["pretrain", "executor=slurm", "--dryrun", "--skip-checks"]):  # fmt: skip
        result = subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], capture_output=True, text=True,
                                timeout=300, env=env, cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        assert list(home.iterdir()) == [], list(home.rglob("*"))  # before: an empty experiments/NAME/
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nemo_home"]


def test_without_a_terminal_and_without_yes_it_says_so(tmp_path):
    # before: NeMo-Run's prompt read nothing, printed "Unexpected error:" and exited 1
    result = subprocess.run([sys.executable, str(ROOT / "launch.py"), "pretrain", f"log.log_dir={tmp_path}"],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2 and "no terminal to ask on whether to submit: pass --yes" in result.stderr
    assert not list(tmp_path.iterdir())


def test_a_sweep_never_writes_into_a_runs_folder(tmp_path):
    (tmp_path / "pretrain" / "checkpoints").mkdir(parents=True)  # runs/pretrain holds a run
    result = launch("pretrain", "--sweep", "optim.lr=1e-3,1e-4", f"log.log_dir={tmp_path}", "--yes")
    assert (
        result.returncode == 2 and "is a run's folder, and a sweep's runs go in a folder of their own" in result.stderr
    )
    assert [p.name for p in (tmp_path / "pretrain").iterdir()] == ["checkpoints"]
