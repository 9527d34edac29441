"""Helpers of tests/train/test_loop.py: an in-memory clip data set, and a script that runs the real training
loop as one rank of a torchrun-style launch.

As a script (environment as torchrun sets it: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)::

    python tests/helpers/train_worker_ddp.py RUN_DIR CONFIG_JSON NUM_CLIPS DTYPE

it trains ``mmv_torch.train.loop.train`` on :class:`RandomClips` under ``torch.set_default_dtype(DTYPE)``
(float64 for parity checks) and writes ``RUN_DIR/summary_rank<R>.json``.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset


def launch_ranks(argv: list[str], world: int, timeout: float, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> list[tuple[int, str]]:
    """Run ``argv`` as the ``world`` ranks of a gloo launch on 127.0.0.1 (environment as torchrun sets it,
    one thread each, SLURM variables removed; ``env`` added); when one rank exits with an error the others
    are killed, as torchrun does. Returns each rank's (exit status, output)."""
    import tempfile
    import time

    from tests.helpers.dist_worker_parity import free_port

    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    base.update({"WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
                 "OMP_NUM_THREADS": "1", **(env or {})})
    logs = [tempfile.TemporaryFile("w+") for _ in range(world)]  # files, not pipes: no rank blocks on a full pipe
    procs = [subprocess.Popen(argv, env={**base, "RANK": str(r), "LOCAL_RANK": str(r)}, cwd=cwd,
                              stdout=logs[r], stderr=subprocess.STDOUT, text=True) for r in range(world)]
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs):
            if any(p.returncode not in (None, 0) for p in procs) or time.monotonic() > deadline:
                for q in procs:
                    q.kill()
                if time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(argv, timeout)
            time.sleep(0.1)
    finally:
        for q in procs:
            if q.poll() is None:
                q.kill()
    out = []
    for p, log in zip(procs, logs):
        rc = p.wait()
        log.seek(0)
        out.append((rc, log.read()))
        log.close()
    return out


def run_two_ranks(tmp_path: Path, num_clips: int, timeout: float) -> list[str]:
    """Run this script as the two ranks of a gloo launch on ``tmp_path/ddp.json`` into ``tmp_path/ddp``
    (float64, one thread each); returns each rank's output, after checking both exited with status 0."""
    argv = [sys.executable, str(Path(__file__).resolve()), str(tmp_path / "ddp"), str(tmp_path / "ddp.json"),
            str(num_clips), "float64"]
    ranks = launch_ranks(argv, 2, timeout)
    outputs = [out for _, out in ranks]
    assert all(rc == 0 for rc, _ in ranks), "\n".join(outputs)[-4000:]
    return outputs


class RandomClips(Dataset):
    """In-memory sample dicts; the 'augmentation' draws from the global RNGs as real transforms may."""

    def __init__(self, n: int, k: int = 3, words: int = 8, vocab: int = 1000) -> None:
        self.n, self.k, self.words, self.vocab = n, k, words, vocab

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(1234 + i)
        video = torch.rand(3, 8, 32, 32, generator=g)
        video = (video * (0.5 + 0.5 * torch.rand(()))).clamp(0, 1)  # global torch RNG
        if random.random() < 0.5:  # python RNG: flip
            video = video.flip(-1)
        audio = torch.randn(1, 20, 40, generator=g) + float(np.random.normal(scale=0.1))  # numpy RNG
        text = torch.randint(1, self.vocab, (self.k, self.words), generator=g)
        return {"video": video, "audio": audio, "has_audio": i % 5 != 4, "text": text,
                "text_mask": torch.tensor([True] * (self.k - 1) + [i % 2 == 0]),
                "word_mask": torch.ones(self.k, self.words, dtype=torch.bool), "index": i}


def main(argv: list[str]) -> None:
    from mmv_torch import dist
    from mmv_torch.config import load_config
    from mmv_torch.train.loop import train

    run_dir, config_path, num_clips, dtype = argv
    torch.set_num_threads(1)
    torch.set_default_dtype(getattr(torch, dtype))
    summary = train(load_config(config_path), RandomClips(int(num_clips)), run_dir, tensorboard=False,
                    progress=False)
    summary["world_size"] = dist.world_size()
    Path(run_dir, f"summary_rank{dist.rank()}.json").write_text(json.dumps(summary))
    dist.destroy_distributed()


if __name__ == "__main__":
    main(sys.argv[1:])
