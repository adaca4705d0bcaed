"""The original package's end-to-end check, on CPU, through the recipes (in this process).

pretrain → continue pretraining from its checkpoint → finetune adding the classifier head (decoder kept) →
finetune dropping the decoder → predict. Each stage's loss decreases, each leaves a checkpoint, and prediction
on the 2,000 held-out digits is well above chance; prediction writes the report of the chain's runs.
"""

import json
import subprocess
import sys
from pathlib import Path
from statistics import mean

import fiddle as fdl
import pytest
import torch

from megatron_mnist.run_logs import logged
from megatron_mnist_recipes.finetune import finetune
from megatron_mnist_recipes.predict import predict
from megatron_mnist_recipes.pretrain import pretrain

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _train(recipe):
    recipe.trainer.accelerator = "cpu"
    recipe.trainer.enable_progress_bar = False
    return fdl.build(recipe)()


def _assert_learned(run_dir):
    losses = [loss for _, loss in logged(run_dir, "train_loss")]
    assert len(losses) >= 6, losses
    assert mean(losses[-3:]) < mean(losses[:3]), f"{run_dir}: train loss did not decrease: {losses}"
    assert list(run_dir.glob("checkpoints/*-last.ckpt")), f"no last checkpoint in {run_dir}"


def test_pretrain_continue_finetune_both_finetune_predict(tmp_path):
    stages = {
        "pretrain": pretrain(name="pretrain", log_dir=str(tmp_path), max_steps=300),
        "continued": pretrain(name="continued", log_dir=str(tmp_path), max_steps=200),
        "finetune_both": finetune(
            pretrain_checkpoint=str(tmp_path / "continued"),
            task="finetune_both",
            name="finetune_both",
            log_dir=str(tmp_path),
            max_steps=300,
        ),
        "finetune": finetune(
            pretrain_checkpoint=str(tmp_path / "finetune_both"),
            task="finetune",
            name="finetune",
            log_dir=str(tmp_path),
            max_steps=300,
        ),
    }
    # continuing: the weights, not the optimizer or the step, come from the first run
    stages["continued"].model.initial_ckpt_path = str(tmp_path / "pretrain")
    # dropping the decoder: the head now comes from the checkpoint too, only the decoder's weights are left behind
    stages["finetune"].model.initial_ckpt_skip_keys_with_these_prefixes = []

    for name, recipe in stages.items():
        assert _train(recipe) == str(tmp_path / name)
        _assert_learned(tmp_path / name)

    # continued pretraining starts where pretraining ended, not from scratch
    first_continued = logged(tmp_path / "continued", "train_loss")[0][1]
    first_pretrain = logged(tmp_path / "pretrain", "train_loss")[0][1]
    assert first_continued < 0.8 * first_pretrain

    finetuned = torch.load(next((tmp_path / "finetune").glob("checkpoints/*-last.ckpt")), weights_only=False)
    assert not any("decoder" in k for k in finetuned["state_dict"])
    both = torch.load(next((tmp_path / "finetune_both").glob("checkpoints/*-last.ckpt")), weights_only=False)
    assert any("decoder" in k for k in both["state_dict"]) and any("digit_classifier" in k for k in both["state_dict"])

    recipe = predict(checkpoint=str(tmp_path / "finetune"), name="predict", log_dir=str(tmp_path))
    recipe.trainer.accelerator = "cpu"
    out = fdl.build(recipe)()
    predictions = torch.load(out)
    assert predictions["digit_logits"].shape == (2000, 10) and predictions["z"].shape == (2000, 3)
    assert sorted(predictions["idx"].tolist()) == list(range(2000))
    accuracy = (predictions["digit_logits"].argmax(-1) == predictions["label"]).float().mean().item()
    metrics = json.loads((tmp_path / "predict" / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(accuracy)
    print(f"held-out accuracy after the chain: {accuracy:.4f}")
    assert accuracy >= 0.7
    _assert_report(tmp_path, tmp_path / "predict" / "report", predictions)
    # on demand, from the launcher, into another folder: the same numbers
    ondemand = tmp_path / "ondemand"
    result = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "report", str(tmp_path), "--out", str(ondemand)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((ondemand / "numbers.json").read_text()) == json.loads(
        (tmp_path / "predict" / "report" / "numbers.json").read_text()
    )
    missing = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "report", str(tmp_path / "nonexistent")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert missing.returncode == 2 and "is not a directory" in missing.stderr


def _assert_report(runs: Path, report: Path, predictions: dict) -> None:
    """The report's pictures exist, and its numbers are the CSV logs' and the predictions file's."""
    for name in ("losses.png", "embedding.png", "confusion.png", "reconstructions.png"):
        assert (report / name).stat().st_size > 10_000, name  # a real picture, not an empty canvas
    numbers = json.loads((report / "numbers.json").read_text())
    labels, predicted = predictions["label"], predictions["digit_logits"].argmax(-1)
    assert numbers["predict: accuracy"] == pytest.approx((predicted == labels).float().mean().item())
    for digit in range(10):
        of_digit = labels == digit
        expected = (predicted[of_digit] == digit).float().mean().item()
        assert numbers[f"predict: accuracy of digit {digit}"] == pytest.approx(expected)
    for run in ("pretrain", "continued", "finetune_both", "finetune"):
        assert numbers[f"{run}: final val_loss"] == logged(runs / run, "val_loss")[-1][1]
        assert numbers[f"{run}: final train_loss"] == logged(runs / run, "train_loss")[-1][1]
    page = (report / "index.html").read_text()
    assert all(f'src="{name}"' in page for name in ("losses.png", "confusion.png", "reconstructions.png"))
    assert f"{numbers['predict: accuracy']:.4f}" in page and "PretrainConfig" in page


def test_cpu_finetune_and_predict_from_a_gpu_checkpoint(tmp_path):
    gpu_checkpoint = Path(__file__).resolve().parents[1] / "fixtures" / "gpu_pretrain_checkpoint"
    _train(finetune(pretrain_checkpoint=str(gpu_checkpoint), name="finetune", log_dir=str(tmp_path), max_steps=200))
    _assert_learned(tmp_path / "finetune")
    recipe = predict(checkpoint=str(tmp_path / "finetune"), name="predict", log_dir=str(tmp_path))
    recipe.trainer.accelerator = "cpu"
    fdl.build(recipe)()
    accuracy = json.loads((tmp_path / "predict" / "metrics.json").read_text())["accuracy"]
    print(f"held-out accuracy, CPU finetune (200 steps) from the GPU-pretrained trunk: {accuracy:.4f}")
    assert accuracy >= 0.5
