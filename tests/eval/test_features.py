"""Feature extraction: view averaging, ordering, saving, and gathering across two CPU ranks."""

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from mmv_torch.eval.features import extract_epochs, extract_features, load_features, run_embed, save_features


class FakeMMV(nn.Module):
    """MMV-like: video (B,3,T,H,W) -> emb['video'][space] with a linear 'repr' and a 'va' head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(3, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, video=None, audio=None, text=None, word_mask=None):
        rep = self.proj(video.mean(dim=(2, 3, 4)))
        return {"video": {"repr": rep, "va": self.head(rep)}}


def _loader(videos, batch_size, order=None):
    order = np.arange(len(videos)) if order is None else order
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        yield {"video": videos[idx], "index": torch.as_tensor(idx)}


def test_views_averaged_and_rows_sorted_by_index():
    model = FakeMMV()
    vids = torch.rand(7, 5, 3, 2, 4, 4)  # 7 items, 5 views each
    order = np.array([3, 0, 6, 1, 5, 2, 4])
    feats, index = extract_features(model, _loader(vids, 3, order), "video", "va")
    with torch.no_grad():
        ref = model(video=vids.reshape(35, 3, 2, 4, 4))["video"]["va"].reshape(7, 5, 2).mean(1)
    np.testing.assert_array_equal(index, np.arange(7))
    np.testing.assert_allclose(feats, ref.numpy(), rtol=1e-5, atol=1e-6)
    per_view, _ = extract_features(model, _loader(vids, 3), "video", "repr", reduce="none", views_per_forward=4)
    assert per_view.shape == (7, 5, 4)
    assert model.training  # restored


def test_single_view_batches_and_bad_input():
    model = FakeMMV()
    vids = torch.rand(4, 3, 2, 4, 4)
    feats, _ = extract_features(model, _loader(vids, 2), "video")
    assert feats.shape == (4, 4)
    with pytest.raises(ValueError, match="index"):
        extract_features(model, [{"video": vids}], "video")
    with pytest.raises(ValueError, match="not 'vt'"):
        extract_features(model, _loader(vids, 2), "video", "vt")
    with pytest.raises(ValueError, match="modality"):
        extract_features(model, _loader(vids, 2), "sound")


def test_image_modality_and_epochs():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 6))
    imgs = torch.rand(5, 2, 3, 4, 4)  # 2 crops per image
    loader = [{"image": imgs[:3], "index": torch.arange(3)}, {"image": imgs[3:], "index": torch.arange(3, 5)}]
    feats, index = extract_features(net, loader, "image")
    with torch.no_grad():
        ref = net(imgs.reshape(10, 3, 4, 4)).reshape(5, 2, 6).mean(1)
    np.testing.assert_allclose(feats, ref.numpy(), rtol=1e-5, atol=1e-6)
    f2, i2 = extract_epochs(net, loader, "image", epochs=3)
    assert f2.shape == (15, 6) and i2.tolist() == list(range(5)) * 3


def test_save_and_load_roundtrip(tmp_path):
    feats = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    records = [{"video": f"v{i}.mp4", "label": i % 2} for i in range(3)]
    path = save_features(tmp_path / "emb", feats, np.arange(3), records, {"modality": "video"})
    assert path.name == "emb.npy"
    got, meta = load_features(tmp_path / "emb.npy")
    np.testing.assert_array_equal(got, feats)
    assert meta["modality"] == "video" and meta["shape"] == [3, 4]
    assert meta["items"][2] == {"row": 2, "index": 2, "video": "v2.mp4", "label": 0}
    res = run_embed(FakeMMV(), _loader(torch.rand(4, 3, 2, 4, 4), 2), "video", "va", tmp_path / "e2.npy",
                    info={"checkpoint": "x"})
    meta2 = json.loads((tmp_path / "e2.index.json").read_text())
    assert res["shape"] == [4, 2] and meta2["checkpoint"] == "x" and meta2["space"] == "va"


def _worker(rank, world, port, videos, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        # A DistributedSampler-like shard that pads by repeating the first index (7 items, 2 ranks).
        order = np.r_[np.arange(7), 0]
        shard = order[rank::world]
        feats, index = extract_features(FakeMMV(), _loader(videos, 2, shard), "video", "va")
        if rank == 0:
            np.save(out, np.concatenate([index[:, None].astype(np.float32), feats], axis=1))
    finally:
        torch.distributed.destroy_process_group()


def test_two_ranks_gather_equals_one_process(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    vids = torch.rand(7, 2, 3, 2, 4, 4)
    out = str(tmp_path / "r0.npy")
    mp.spawn(_worker, args=(2, port, vids, out), nprocs=2, join=True)
    got = np.load(out)
    ref, index = extract_features(FakeMMV(), _loader(vids, 3), "video", "va")
    np.testing.assert_array_equal(got[:, 0], index)
    np.testing.assert_allclose(got[:, 1:], ref, rtol=1e-5, atol=1e-6)


def test_run_linear_and_run_retrieval_write_reports(tmp_path):
    from mmv_torch.eval.linear_probe import run_linear
    from mmv_torch.eval.retrieval import run_retrieval

    model = FakeMMV()
    g = torch.Generator().manual_seed(0)
    labels = np.arange(12) % 2
    vids = torch.rand(12, 3, 3, 2, 4, 4, generator=g) * 0.2 + torch.as_tensor(labels).float().reshape(12, 1, 1, 1, 1, 1)
    res = run_linear(model, list(_loader(vids, 4)), list(_loader(vids, 4)), labels, labels, train_epochs=2,
                     classifier="logistic", weight_decays=(1e-3,), max_iter=30, json_out=str(tmp_path / "lin.json"))
    saved = json.loads((tmp_path / "lin.json").read_text())
    assert saved["metrics"] == res["metrics"] and saved["settings"]["train_epochs"] == 2
    assert saved["settings"]["test_windows"] == 3 and (tmp_path / "lin.md").read_text().startswith("### linear")
    ret = run_retrieval(model, list(_loader(vids, 4)), list(_loader(vids, 4)), "video", "video", "va",
                        json_out=str(tmp_path / "ret.json"))
    assert set(ret["metrics"]) == {"video2video"}
    assert json.loads((tmp_path / "ret.json").read_text())["settings"]["gallery"] == 12
    # Self-retrieval in FakeMMV's 2-d space: the two label clusters give near-exact ties, which count
    # against the query, so each item ranks within its cluster of 6 but not necessarily first.
    m = ret["metrics"]["video2video"]
    assert m["R@5"] >= 0.9 and m["R@10"] == 1.0 and 1.0 <= m["median_rank"] <= 3.0
