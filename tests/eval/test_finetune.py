"""Fine-tuning loop: learns a separable toy set, checkpoints atomically, resume equals one run."""

import json

import torch
from torch import nn

from mmv_torch.eval.finetune import CHECKPOINT, LOG, evaluate_classifier, finetune


class TinyBackbone(nn.Module):
    out_dim = 4

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 4)

    def forward(self, video):
        return self.proj(video.mean(dim=(2, 3, 4)))


def _data(n=24, windows=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    colours = torch.eye(3)[labels]  # class = dominant colour channel
    shape = (n, windows, 3, 2, 4, 4) if windows else (n, 3, 2, 4, 4)
    video = torch.rand(shape, generator=g) * 0.5
    video += colours.reshape(n, *([1] if windows else []), 3, 1, 1, 1)
    return [{"video": video[i:i + 6], "label": labels[i:i + 6]} for i in range(0, n, 6)]


def test_finetune_learns_and_logs(tmp_path):
    torch.manual_seed(0)
    res = finetune(TinyBackbone(), _data(), _data(windows=3, seed=1), 3, tmp_path, epochs=8, lr=5e-2,
                   log_every=2)
    assert res["metrics"]["test_top1"] == 1.0
    assert res["history"][-1]["train_loss"] < res["history"][0]["train_loss"]
    lines = [json.loads(l) for l in (tmp_path / LOG).read_text().splitlines()]
    assert any("loss" in r for r in lines) and sum("test_top1" in r for r in lines) == 8
    assert (tmp_path / CHECKPOINT).is_file() and not (tmp_path / (CHECKPOINT + ".tmp")).exists()
    assert evaluate_classifier(res["model"], _data(windows=2, seed=3))["top1"] == 1.0


class _Interrupting(list):
    """A loader that raises after ``stop`` batches in total (a killed job)."""

    def __init__(self, batches, stop):
        super().__init__(batches)
        self.stop, self.seen = stop, 0

    def __iter__(self):
        for b in list.__iter__(self):
            if self.seen == self.stop:
                raise KeyboardInterrupt
            self.seen += 1
            yield b


def test_resume_equals_uninterrupted(tmp_path):
    torch.manual_seed(0)
    full = finetune(TinyBackbone(), _data(), _data(), 3, tmp_path / "a", epochs=4, lr=1e-2)
    torch.manual_seed(0)
    try:  # killed in the middle of epoch 3 (4 batches per epoch): the epoch-2 checkpoint survives
        finetune(TinyBackbone(), _Interrupting(_data(), stop=10), _data(), 3, tmp_path / "b", epochs=4, lr=1e-2)
    except KeyboardInterrupt:
        pass
    assert torch.load(tmp_path / "b" / CHECKPOINT, weights_only=False)["epoch"] == 1
    torch.manual_seed(123)  # a different fresh init: everything must come from the checkpoint
    resumed = finetune(TinyBackbone(), _data(), _data(), 3, tmp_path / "b", epochs=4, lr=1e-2)
    assert [h["epoch"] for h in resumed["history"]] == [0, 1, 2, 3]
    for k, v in full["model"].state_dict().items():
        assert torch.equal(v, resumed["model"].state_dict()[k]), k


def test_resume_with_another_class_count_or_a_corrupt_checkpoint_is_a_clear_error(tmp_path):
    import pytest

    torch.manual_seed(0)
    finetune(TinyBackbone(), _data(), _data(), 3, tmp_path, epochs=1, lr=1e-2)
    with pytest.raises(ValueError, match="fine-tunes 3 classes, the data now have 4"):
        finetune(TinyBackbone(), _data(), _data(), 4, tmp_path, epochs=2, lr=1e-2)
    (tmp_path / CHECKPOINT).write_bytes((tmp_path / CHECKPOINT).read_bytes()[:100])
    with pytest.raises(ValueError, match="cannot be read"):
        finetune(TinyBackbone(), _data(), _data(), 3, tmp_path, epochs=2, lr=1e-2)
