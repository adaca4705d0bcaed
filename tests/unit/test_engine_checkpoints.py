"""The megatron engine's checkpoint set (job/megatron_engine.py's save_checkpoint) on a CPU, in-process: a step that
is both a new best and the last is saved once, its twin made of the same files (hard links), and each checkpoint
stays whole when the other goes. The GPU's torch_dist folders go the same way in the GPU suite's resume tests."""

import os

import torch

from megatron_mnist.job import megatron_engine as engine
from megatron_mnist.model.config import PretrainConfig


def parts() -> engine.Parts:
    module = torch.nn.Linear(4, 2)
    module.config = PretrainConfig()
    optimizer = torch.optim.Adam(module.parameters())
    return engine.Parts(module, module, optimizer, None, None, torch.device("cpu"))


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_new_best_and_the_last_are_one_save_and_independent_files(tmp_path, monkeypatch):
    saves = []
    write = engine._write
    monkeypatch.setattr(engine, "_write", lambda *a, **k: saves.append(a[1]) or write(*a, **k))
    p, folder = parts(), tmp_path / "checkpoints"
    state = engine.RunState(step=50, consumed_samples=3200, val_loss=0.5)
    engine.save_checkpoint(tmp_path, p, state, top_k=1, zero=True)
    assert saves == ["step=50-val_loss=0.5000"]  # written once; the last is its twin
    assert names(folder) == ["step=50-val_loss=0.5000", "step=50-val_loss=0.5000-last",
                             "step=50-val_loss=0.5000-last.ckpt", "step=50-val_loss=0.5000.ckpt"]  # fmt: skip
    best, last = folder / "step=50-val_loss=0.5000.ckpt", folder / "step=50-val_loss=0.5000-last.ckpt"
    assert os.path.samefile(best, last)
    assert (folder / "step=50-val_loss=0.5000-last" / "context" / "model.yaml").is_file()
    assert torch.load(last, weights_only=False)["step"] == 50

    # a worse validation: the best stays, the last is saved anew (not into the shared file) and the old last goes
    with torch.no_grad():
        p.module.weight.add_(1.0)
    state.step, state.val_loss = 100, 0.7
    engine.save_checkpoint(tmp_path, p, state, top_k=1, zero=True)
    assert saves[1:] == ["step=100-val_loss=0.7000-last"]
    assert names(folder) == ["step=100-val_loss=0.7000-last", "step=100-val_loss=0.7000-last.ckpt",
                             "step=50-val_loss=0.5000", "step=50-val_loss=0.5000.ckpt"]  # fmt: skip
    kept = torch.load(best, weights_only=False)
    assert kept["step"] == 50 and not any(n.endswith("-unfinished") for n in names(folder))
    assert not torch.equal(kept["state_dict"]["module.weight"], p.module.weight.detach())


def test_a_save_replacing_a_twin_of_the_same_name_leaves_the_other_whole(tmp_path):
    p, folder = parts(), tmp_path / "checkpoints"
    state = engine.RunState(step=50, consumed_samples=3200, val_loss=0.5)
    engine.save_checkpoint(tmp_path, p, state, top_k=1, zero=True)
    best = folder / "step=50-val_loss=0.5000.ckpt"
    before = best.read_bytes()
    with torch.no_grad():
        p.module.weight.add_(1.0)
    # the last saved again under its own name (a train end at the step it validated): a new file, not a write into
    # the inode the best shares
    engine._write(folder, "step=50-val_loss=0.5000-last", p, state, True, state.best)
    assert best.read_bytes() == before
    assert not os.path.samefile(best, folder / "step=50-val_loss=0.5000-last.ckpt")
