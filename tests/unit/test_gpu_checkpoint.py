"""A Megatron distributed checkpoint written on a GPU, read on this CPU (tests/fixtures/README.md)."""

from pathlib import Path

import torch

from megatron_mnist.job.builders import model_config
from megatron_mnist.model.weights import load_model_weights, resolve_checkpoint

GPU_CHECKPOINT = Path(__file__).resolve().parents[1] / "fixtures" / "gpu_pretrain_checkpoint"


def test_a_megatron_checkpoint_folder_resolves_to_its_weights():
    assert resolve_checkpoint(GPU_CHECKPOINT) == GPU_CHECKPOINT / "weights"


def test_model_weights_come_out_of_the_distributed_format_without_a_process_group():
    weights = load_model_weights(GPU_CHECKPOINT)
    assert not torch.distributed.is_initialized()
    expected = set(model_config("pretrain").configure_model().state_dict())
    assert set(weights) == expected  # no optimizer state, no `module.` prefixes
    assert all(w.dtype == torch.bfloat16 for w in weights.values())  # trained with bf16-mixed
    assert weights["trunk.0.weight"].shape == (64, 784) and weights["trunk.0.weight"].abs().sum() > 0


def test_a_cpu_finetune_starts_from_the_gpu_trunk(capsys):
    weights = load_model_weights(GPU_CHECKPOINT)
    model = model_config("finetune", initial_ckpt_path=str(GPU_CHECKPOINT)).configure_model()
    # the job's log says what was loaded (NeMo's resume logs "Training from scratch" for the run's own checkpoints)
    said = capsys.readouterr().out
    assert f"initial weights: 4 tensors from {GPU_CHECKPOINT}; started fresh: digit_classifier." in said
    assert model.image_decoder is None
    for key in ("trunk.0.weight", "trunk.0.bias", "trunk.2.weight", "trunk.2.bias"):
        assert torch.equal(model.state_dict()[key], weights[key].float())
    out = model(torch.rand(4, 1, 28, 28))
    assert out["digit_logits"].shape == (4, 10)
