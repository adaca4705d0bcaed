"""The launcher's pure helpers, in-process (the commands themselves run as subprocesses in tests/e2e)."""

import fiddle as fdl
import pytest
from nemo_run.cli.cli_parser import CLIException

from megatron_mnist import executors
from megatron_mnist.launcher import cli


def test_sweep_axes_are_split_from_the_other_arguments():
    args = ["trainer.max_steps=5", "--sweep", "optim.lr=1e-3,1e-4", "data.micro_batch_size=32,64", "--yes"]
    rest, axes = cli.split_sweep(args)
    assert rest == ["trainer.max_steps=5", "--yes"]
    assert axes == [("optim.lr", ["1e-3", "1e-4"]), ("data.micro_batch_size", ["32", "64"])]
    assert cli.split_sweep(["a=1"]) == (["a=1"], [])
    with pytest.raises(SystemExit) as e:
        cli.split_sweep(["--sweep", "optim.lr=1e-3"])  # one value is not an axis
    assert e.value.code == 2


def test_a_nemo_run_parser_error_becomes_its_innermost_message():
    try:
        try:
            raise ValueError("Invalid value for Literal type. Expected one of ('a', 'b'), got 'c'")
        except ValueError as inner:
            raise CLIException("Error parsing argument", "task=c", {"key": "task"}) from inner
    except CLIException as outer:
        assert cli.parse_error(outer) == "Invalid value for Literal type. Expected one of ('a', 'b'), got 'c'"
    assert cli.parse_error(CLIException("bad value", "x=1", {"k": 1})) == "bad value"


def test_a_parser_error_names_the_argument_it_is_about():
    import nemo_run as run
    from nemo_run.cli.cli_parser import parse_cli_args

    args = ["launcher=torchrun", "ntasks_per_node=abc"]
    with pytest.raises(Exception) as e:
        parse_cli_args(run.Partial(executors.local), args)
    assert cli.parse_error(e.value, args, "executor.") == (
        "executor.ntasks_per_node=abc: Failed to parse 'abc' as <class 'int'>: Invalid integer literal"
    )


def test_fail_is_one_line_on_stderr_and_exit_status_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.fail("data.root='x' is not a directory")
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: data.root='x' is not a directory"]


def test_exit_status_is_0_only_when_every_task_succeeded_or_was_submitted():
    class Result:
        def __init__(self, state):
            self.state = state

    assert cli.exit_status({"a": Result("SUCCEEDED"), "b": Result("SUBMITTED")}, detached=True) == 0
    assert cli.exit_status({"a": Result("SUCCEEDED"), "b": Result("FAILED")}, detached=True) == 1
    # waited for, yet only submitted: it never ran (NEMORUN_HOME's disk full): not a success
    assert cli.exit_status({"a": Result("SUCCEEDED"), "b": Result("SUBMITTED")}) == 1


def test_a_pipeline_shares_one_folder_that_every_stage_reaches(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = fdl.build(executors.local())
    assert cli.pipeline_output_dir("runs", local) == str(tmp_path / "runs")
    remote = fdl.build(executors.slurm(tunnel="ssh", host="login", job_dir="/scratch/jobs"))
    assert cli.pipeline_output_dir("runs", remote) == "/scratch/jobs/runs"  # on the cluster, not here
    assert cli.pipeline_output_dir("/abs/runs", remote) == "/abs/runs"
