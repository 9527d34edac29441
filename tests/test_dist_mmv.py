"""The real tiny MMV under 2-process DDP (gloo, CPU, SyncBatchNorm) equals one process on the
concatenated batch: the loss, every term, every parameter gradient and the BN running statistics."""


import torch

from mmv_torch.config import LossConfig  # noqa: E402
from tests.helpers import dist_worker_parity as W


def tiny_mmv_float64() -> torch.nn.Module:
    """The tiny preset in float64 (module level, so spawned workers can unpickle it)."""
    from mmv_torch.weights.resolve import create_model

    return create_model("tiny").double()


def test_tiny_mmv_ddp_equals_one_process() -> None:
    g = torch.Generator().manual_seed(3)
    n, k = 8, 3
    batch = {
        "video": torch.rand(n, 3, 4, 24, 24, generator=g, dtype=torch.float64),
        "audio": torch.randn(n, 1, 24, 16, generator=g, dtype=torch.float64),
        "text": torch.randint(1, 1000, (n, k, 5), generator=g),
        "audio_mask": torch.tensor([True, False, True, True, True, True, False, True]),
        "text_mask": torch.tensor([[True, True, False], [False, False, False], [True, False, False],
                                   [True, True, True], [True, False, True], [False, False, False],
                                   [True, True, False], [True, False, False]]),
    }
    # weight_at > 0 so every head, the audio->text one included, takes part in the loss.
    step = W.make_mmv_step(LossConfig(weight_at=0.5))
    reference, ranks = W.run_ddp_parity(tiny_mmv_float64, step, batch, world_size=2, timeout_s=240.0)
    assert set(reference["parts"]) == {"va", "vt", "at"}
    assert all(r["sync_bn"] > 0 for r in ranks)
    worst = W.assert_parity(reference, ranks, tol=1e-9)
    print(f"tiny MMV float64: largest gradient difference DDP vs one process {worst:.2e}")
