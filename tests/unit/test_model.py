import pytest
import torch
from megatron.core.transformer import TransformerConfig

from megatron_mnist.job.builders import model_config
from megatron_mnist.model import losses
from megatron_mnist.model.config import CONFIGS, FinetuneBothConfig, FinetuneConfig, PretrainConfig
from megatron_mnist.model.spec import TASKS, TRUNK
from megatron_mnist.model.weights import CheckpointError, load_initial_weights


@pytest.mark.parametrize(
    "config, keys, loss",
    [
        (PretrainConfig(), {"x_hat", "z"}, losses.MSELossReduction),
        (FinetuneConfig(), {"digit_logits", "z"}, losses.ClassifierLossReduction),
        (FinetuneBothConfig(), {"x_hat", "z", "digit_logits"}, losses.MSEPlusClassifierLossReduction),
    ],
)
def test_configs_build_models_with_the_right_outputs(config, keys, loss):
    assert isinstance(config, TransformerConfig)
    model = config.configure_model()
    out = model(torch.rand(5, 1, 28, 28))
    assert set(out) == keys
    assert out["z"].shape == (5, 3)
    if "x_hat" in out:
        assert out["x_hat"].shape == (5, 784)
    if "digit_logits" in out:
        assert out["digit_logits"].shape == (5, 10)
    assert config.get_loss_reduction_class() is loss


@pytest.mark.parametrize("task", sorted(TASKS))
def test_a_tasks_model_is_its_entry_in_the_task_table(task):
    """The model's parts are the trunk and the table's heads, named as the table names them (the checkpoint's key
    prefixes, which skip prefixes and the report read), and its loss is the table's."""
    config = CONFIGS[task]()
    parts = {key.split(".")[0] for key in config.configure_model().state_dict()}
    assert parts == {TRUNK} | TASKS[task].heads
    assert config.get_loss_reduction_class().__name__ == TASKS[task].loss
    assert type(config).__name__ == TASKS[task].config
    assert config.initial_ckpt_skip_keys_with_these_prefixes == list(TASKS[task].default_skip)


def test_layer_sizes_match_the_tutorial():
    model = FinetuneBothConfig().configure_model()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.endswith("weight")}
    assert shapes == {
        "trunk.0.weight": (64, 784),
        "trunk.2.weight": (3, 64),
        "image_decoder.0.weight": (64, 3),
        "image_decoder.2.weight": (784, 64),
        "digit_classifier.weight": (10, 3),
    }


def test_the_reports_reconstructions_are_the_models():
    from megatron_mnist.report import reconstruct

    model = PretrainConfig().configure_model()
    images = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        expected = model(images)["x_hat"].reshape(images.shape)
    assert torch.equal(reconstruct(model.state_dict(), images), expected)  # the report rebuilds digits without Megatron


def _lightning_checkpoint(model, path):
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


def test_finetune_adds_the_head_and_drops_the_decoder(tmp_path):
    pretrained = PretrainConfig().configure_model()
    ckpt = _lightning_checkpoint(pretrained, tmp_path / "pre.ckpt")
    finetuned = model_config("finetune", initial_ckpt_path=str(ckpt)).configure_model()
    fresh = FinetuneConfig().configure_model()
    for key, value in pretrained.state_dict().items():
        if key.startswith("trunk."):
            assert torch.equal(finetuned.state_dict()[key], value)
    assert finetuned.image_decoder is None
    assert not torch.equal(finetuned.digit_classifier.weight, torch.zeros_like(fresh.digit_classifier.weight))


def test_skip_prefixes_keep_fresh_weights(tmp_path):
    both = FinetuneBothConfig().configure_model()
    ckpt = _lightning_checkpoint(both, tmp_path / "both.ckpt")
    torch.manual_seed(0)
    target = FinetuneBothConfig().configure_model()
    before = target.digit_classifier.weight.clone()
    load_initial_weights(target, ckpt, skip_prefixes=["digit_classifier", "image_decoder"])
    assert torch.equal(target.digit_classifier.weight, before)  # skipped
    assert not torch.equal(target.image_decoder[0].weight, both.image_decoder[0].weight)  # skipped
    assert torch.equal(target.trunk[0].weight, both.trunk[0].weight)  # loaded
    load_initial_weights(target, ckpt, skip_prefixes=[])
    assert torch.equal(target.digit_classifier.weight, both.digit_classifier.weight)


def test_incompatible_checkpoints_are_clear_errors(tmp_path):
    pretrained = _lightning_checkpoint(PretrainConfig().configure_model(), tmp_path / "pre.ckpt")
    with pytest.raises(CheckpointError, match="lacks digit_classifier.bias, digit_classifier.weight"):
        load_initial_weights(FinetuneConfig().configure_model(), pretrained, skip_prefixes=[])
    wide = _lightning_checkpoint(PretrainConfig(hidden_size=128).configure_model(), tmp_path / "wide.ckpt")
    with pytest.raises(CheckpointError, match=r"shapes differ: trunk.0.weight \(128, 784\) != \(64, 784\)"):
        load_initial_weights(PretrainConfig().configure_model(), wide, skip_prefixes=[])
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_initial_weights(PretrainConfig().configure_model(), tmp_path / "missing", skip_prefixes=[])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        load_initial_weights(PretrainConfig().configure_model(), tmp_path / "empty", skip_prefixes=[])
