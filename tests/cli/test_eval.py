"""``mmv-torch embed`` and ``mmv-torch eval linear|retrieval|finetune|image`` run in process on a tiny
random checkpoint and a tiny synthetic data set."""

import json

import numpy as np
import pytest

from mmv_torch.cli.main import main
from mmv_torch.config import get_preset
from mmv_torch.data.text.dmvr import dmvr_tokenizer

FAST = ["--workers", "0", "--batch-size", "4", "--device", "cpu"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A synthetic data set, a tiny checkpoint folder with vocab.txt, the same without it, and images."""
    import torch
    from PIL import Image

    from mmv_torch.config import apply_overrides, get_preset
    from mmv_torch.data.text.tokenizer import split_words
    from tests.helpers.model_utils import noise_calibrated_model, save_checkpoint_folder

    root = tmp_path_factory.mktemp("cli_eval")
    data = root / "syn"
    assert main(["data", "synthetic", str(data), "--num-clips", "1", "--size", "32", "--workers", "1",
                 "--num-probe-train", "4", "--num-probe-test", "4", "--num-retrieval", "3"]) == 0
    lines = [json.loads(x) for x in (data / "retrieval.jsonl").read_text().splitlines()]
    words = ["<pad>"] + sorted({w for x in lines for c in x["captions"] for w in split_words(c)})
    cfg = apply_overrides(get_preset("tiny"), {
        "model.text.vocab_size": len(words), "data.num_frames": 4, "data.crop_size": 32,
        "data.eval_crop_size": 32, "data.resize_short": 36})
    model = noise_calibrated_model(cfg, video=torch.rand(6, 3, 4, 32, 32), audio=torch.randn(6, 1, 100, 40),
                                   text=torch.randint(1, len(words), (6, 6)))
    ckpt = save_checkpoint_folder(model, cfg, root / "ckpt")
    bare = save_checkpoint_folder(model, cfg, root / "converted")
    (ckpt / "vocab.txt").write_text("".join(w + "\n" for w in words))

    rng = np.random.default_rng(0)
    images = root / "images"
    for split in ("train", "val"):
        for name, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
            d = images / split / name
            d.mkdir(parents=True)
            for i in range(3):
                pixels = np.clip(np.array(colour) + rng.normal(0, 30, (40, 48, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(d / f"{i}.png")
    return {"root": root, "data": data, "ckpt": str(ckpt), "bare": str(bare), "images": images, "words": words}


def _ranks(q, g, q_keys, g_keys):
    """Brute force: 1 + #negatives scoring at least the best positive (cosine similarity)."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    s = q @ g.T
    pos = q_keys[:, None] == g_keys[None, :]
    best = np.where(pos, s, -np.inf).max(axis=1)
    return 1 + (np.where(pos, -np.inf, s) >= best[:, None]).sum(axis=1)


def test_embed_and_retrieval_agree_with_brute_force(setup, capsys):
    data, ckpt, root = setup["data"], setup["ckpt"], setup["root"]
    manifest = str(data / "retrieval.jsonl")
    common = ["--checkpoint", ckpt, "--data", manifest, "--space", "vt", *FAST]
    assert main(["embed", *common, "--modality", "video", "--windows", "2", "--out", str(root / "e" / "video")]) == 0
    assert main(["embed", *common, "--modality", "text", "--out", str(root / "e" / "text")]) == 0
    video = np.load(root / "e" / "video.npy")
    text = np.load(root / "e" / "text.npy")
    v_index = json.loads((root / "e" / "video.index.json").read_text())
    t_index = json.loads((root / "e" / "text.index.json").read_text())
    assert video.shape == (3, 32) and text.shape == (6, 32) and np.isfinite(text).all()
    assert v_index["windows"] == 2 and v_index["space"] == "vt" and v_index["items"][2]["video"].endswith(".mp4")
    assert t_index["vocab"].endswith("vocab.txt") and t_index["oov_words"] == 0 and t_index["word_mask"] is True
    owner = np.array([it["entry"] for it in t_index["items"]])
    assert owner.tolist() == [0, 0, 1, 1, 2, 2]

    out = root / "r" / "retrieval.json"
    assert main(["eval", "retrieval", *common, "--windows", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert out.with_suffix(".md").read_text().startswith("### zero-shot retrieval text<->video (vt)")
    assert report["settings"]["captions"] == 6 and report["settings"]["windows"] == 2
    t2v = _ranks(text, video, owner, np.arange(3))
    v2t = _ranks(video, text, np.arange(3), owner)
    for name, ranks in (("text2video", t2v), ("video2text", v2t)):
        m = report["metrics"][name]
        assert m["queries"] == len(ranks)
        assert m["R@1"] == pytest.approx((ranks <= 1).mean())
        assert m["median_rank"] == pytest.approx(np.median(ranks))
        assert m["mean_rank"] == pytest.approx(ranks.mean())


def test_retrieval_audio_video(setup, capsys):
    out = setup["root"] / "r" / "av.json"
    assert main(["eval", "retrieval", "--checkpoint", setup["ckpt"], "--data", str(setup["data"] / "retrieval.jsonl"),
                 "--pair", "audio-video", *FAST, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["space"] == "va"
    assert report["metrics"]["audio2video"]["queries"] == 3 and report["metrics"]["video2audio"]["queries"] == 3


def test_eval_linear_video_svm(setup, capsys):
    out = setup["root"] / "r" / "linear.json"
    assert main(["eval", "linear", "--checkpoint", setup["ckpt"], "--data", str(setup["data"] / "probe_motion.jsonl"),
                 *FAST, "--train-epochs", "2", "--test-windows", "2", "--C", "0.001,0.1", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r["metrics"]) == {"train_top1", "train_top5", "test_top1", "test_top5"}
    assert all(0.0 <= v <= 1.0 for v in r["metrics"].values())
    s = r["settings"]
    assert s["classifier"] == "StandardScaler+LinearSVC" and s["C_grid"] == [0.001, 0.1] and s["C"] in (0.001, 0.1)
    assert s["train_rows"] == 8 and s["test_windows"] == 2 and s["train_epochs"] == 2 and s["space"] == "repr"
    assert "| test_top1 |" in out.with_suffix(".md").read_text()


def test_eval_linear_audio_folds_logistic(setup, capsys):
    data = setup["data"]
    lines = [json.loads(x) for x in (data / "probe_sound.jsonl").read_text().splitlines()]
    for i, x in enumerate(lines):
        x["fold"] = i % 2 + 1
        del x["split"]
    manifest = data / "sound_folds.jsonl"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = setup["root"] / "r" / "folds.json"
    assert main(["eval", "linear", "--checkpoint", setup["ckpt"], "--data", str(manifest), "--modality", "audio",
                 "--folds", "--classifier", "logistic", "--weight-decay", "0.01", *FAST, "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert sorted(r["per_fold"]) == ["1", "2"] and "test_top1_mean" in r["metrics"]
    assert r["settings"]["weight_decay"] == 0.01 and r["settings"]["modality"] == "audio"


def test_eval_linear_multilabel(setup, capsys):
    data = setup["data"]
    motion = [json.loads(x) for x in (data / "probe_motion.jsonl").read_text().splitlines()]
    sound = [json.loads(x) for x in (data / "probe_sound.jsonl").read_text().splitlines()]
    lines = [{"video": m["video"], "split": m["split"], "labels": [m["label"], "sound_" + s["label"]]}
             for m, s in zip(motion, sound)]
    manifest = data / "multilabel.jsonl"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = setup["root"] / "r" / "multilabel.json"
    assert main(["eval", "linear", "--checkpoint", setup["ckpt"], "--data", str(manifest), "--multilabel",
                 "--train-epochs", "1", "--test-windows", "1", "--probe-epochs", "5", "--hidden", "8", *FAST,
                 "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert 0.0 <= r["metrics"]["test_mAP"] <= 1.0 and r["settings"]["hidden"] == [8]
    assert r["settings"]["classes"] == len({c for x in lines for c in x["labels"]})


def test_eval_finetune_and_resume(setup, capsys):
    run = setup["root"] / "ft"
    out = setup["root"] / "r" / "ft.json"
    args = ["eval", "finetune", "--checkpoint", setup["ckpt"], "--data", str(setup["data"] / "probe_motion.jsonl"),
            "--out", str(run), "--test-windows", "1", *FAST, "--json", str(out)]
    assert main([*args, "--epochs", "1"]) == 0
    assert json.loads(out.read_text())["settings"]["epochs"] == 1
    assert main([*args, "--epochs", "2"]) == 2
    assert "--resume latest" in capsys.readouterr().err
    assert main([*args, "--epochs", "2", "--resume", "latest"]) == 0
    r = json.loads(out.read_text())
    assert [h["epoch"] for h in r["history"]] == [0, 1]
    assert {"test_top1", "test_top5", "train_loss"} <= set(r["metrics"])
    assert r["settings"]["finetune_checkpoint"].endswith("finetune.pt") and r["settings"]["checkpoint"] == setup["ckpt"]


def test_eval_image_and_embed_image(setup, capsys):
    out = setup["root"] / "r" / "image.json"
    assert main(["eval", "image", "--checkpoint", setup["ckpt"], "--data", str(setup["images"]), "--bn-steps", "1",
                 "--strategies", "naive,bn_retrained", *FAST, "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert sorted(r["metrics"]) == ["bn_retrained", "naive"]
    assert all(set(m) >= {"test_top1", "test_top5"} for m in r["metrics"].values())
    assert r["settings"]["train_images"] == 6 and r["settings"]["bn_retrained"]["bn_steps"] == 1
    emb = setup["root"] / "e" / "image"
    assert main(["embed", "--checkpoint", setup["ckpt"], "--data", str(setup["images"]), "--modality", "image",
                 "--image-strategy", "inflation", *FAST, "--out", str(emb)]) == 0
    index = json.loads(emb.with_suffix(".index.json").read_text())
    out_dim = int(get_preset("tiny").model.video.width_mult * 1024)
    assert np.load(str(emb) + ".npy").shape == (12, out_dim) and index["image"]["strategy"] == "inflation"


def test_missing_vocabulary_is_explained(setup, capsys):
    common = ["--checkpoint", setup["bare"], "--data", str(setup["data"] / "retrieval.jsonl"), *FAST]
    assert main(["embed", *common, "--modality", "text", "--out", str(setup["root"] / "e" / "x")]) == 2
    err = capsys.readouterr().err
    assert "has no vocab.txt" in err and "--vocab FILE" in err and "65,536" in err and "word list" in err
    assert main(["eval", "retrieval", *common]) == 2
    assert "MMV release ships no word list" in capsys.readouterr().err
    # With --vocab it works; a list of the wrong length is refused.
    vocab = setup["root"] / "words.txt"
    vocab.write_text("".join(w + "\n" for w in setup["words"]))
    assert main(["embed", *common, "--modality", "text", "--vocab", str(vocab), "--out",
                 str(setup["root"] / "e" / "t2")]) == 0
    assert json.loads((setup["root"] / "e" / "t2.index.json").read_text())["word_mask"] is False
    vocab.write_text("".join(w + "\n" for w in setup["words"][:-1]))
    assert main(["eval", "retrieval", *common, "--vocab", str(vocab)]) == 2
    assert "rows" in capsys.readouterr().err


def test_bad_arguments_are_clear_errors(setup, capsys):
    ckpt, probe = setup["ckpt"], str(setup["data"] / "probe_motion.jsonl")
    with pytest.raises(SystemExit) as e:
        main(["embed", "--checkpoint", ckpt, "--data", probe, "--modality", "smell", "--out", "x"])
    assert e.value.code == 2 and "invalid choice: 'smell'" in capsys.readouterr().err
    assert main(["eval", "linear", "--checkpoint", ckpt, "--data", str(setup["root"] / "nope.jsonl"), *FAST]) == 2
    assert "cannot read manifest" in capsys.readouterr().err
    assert main(["eval", "linear", "--checkpoint", str(setup["root"] / "nowhere"), "--data", probe]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["eval", "linear", "--checkpoint", ckpt, "--data", probe, "--classifier", "logistic", "--C", "1"]) == 2
    assert "--C applies to --classifier svm" in capsys.readouterr().err
    assert main(["eval", "linear", "--checkpoint", ckpt, "--data", probe, "--set", "model.graph=shared"]) == 2
    assert "only data.* settings" in capsys.readouterr().err
    assert main(["eval", "linear", "--checkpoint", ckpt, "--data", probe, "--ucf101-splits", "x"]) == 2
    assert "exactly one of --data" in capsys.readouterr().err
    assert main(["eval", "image", "--checkpoint", ckpt, "--data", probe, "--strategies", "naive,magic"]) == 2
    assert "--strategies" in capsys.readouterr().err
    assert main(["embed", "--checkpoint", ckpt, "--data", str(setup["images"]), "--modality", "image", "--space",
                 "va", "--out", "x"]) == 2
    assert "use --space repr" in capsys.readouterr().err


def test_official_split_files(setup, capsys):
    """UCF101 split files (train/test) and the ESC-50 meta CSV (--folds) over the synthetic clips."""
    data, root = setup["data"], setup["root"]
    motion = [json.loads(x) for x in (data / "probe_motion.jsonl").read_text().splitlines()]
    classes = sorted({x["label"] for x in motion})
    splits, videos = root / "ucf_splits", root / "ucf_videos"
    splits.mkdir()
    (splits / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    for kind in ("train", "test"):
        rows = [x for x in motion if x["split"] == kind]
        (splits / f"{kind}list01.txt").write_text(
            "".join(f"{x['label']}/{x['video']}" + (f" {classes.index(x['label']) + 1}" if kind == "train" else "")
                    + "\n" for x in rows))
    for x in motion:
        (videos / x["label"]).mkdir(parents=True, exist_ok=True)
        (videos / x["label"] / x["video"]).symlink_to(data / x["video"])
    out = root / "r" / "ucf.json"
    assert main(["eval", "linear", "--checkpoint", setup["ckpt"], "--ucf101-splits", str(splits), "--video-root",
                 str(videos), "--train-epochs", "1", "--test-windows", "1", *FAST, "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["settings"]["data"] == str(splits) and r["settings"]["classes"] == len(classes)
    assert r["settings"]["test_videos"] == 4

    sound = [json.loads(x) for x in (data / "probe_sound.jsonl").read_text().splitlines()]
    names = sorted({x["label"] for x in sound})
    meta = root / "esc50.csv"
    meta.write_text("filename,fold,target,category\n" + "".join(
        f"{x['audio']},{i % 2 + 1},{names.index(x['label'])},{x['label']}\n" for i, x in enumerate(sound)))
    out = root / "r" / "esc.json"
    assert main(["eval", "linear", "--checkpoint", setup["ckpt"], "--esc50-meta", str(meta), "--audio-root",
                 str(data), "--modality", "audio", "--folds", *FAST, "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert sorted(r["per_fold"]) == ["1", "2"] and r["settings"]["classes"] == len(names)


def test_embed_a_plain_folder_of_videos(setup, capsys):
    """A folder of one's own videos (nested, no class folders) embeds without a manifest."""
    import shutil

    data, root = setup["data"], setup["root"]
    videos = sorted(p for p in data.rglob("*.mp4"))[:3]
    mine = root / "my_videos"
    (mine / "trip").mkdir(parents=True)
    shutil.copy(videos[0], mine / "a.mp4")
    shutil.copy(videos[1], mine / "trip" / "b.mp4")
    shutil.copy(videos[2], mine / "trip" / "c.mp4")
    out = root / "e" / "mine"
    assert main(["embed", "--checkpoint", setup["ckpt"], "--data", str(mine), "--modality", "video",
                 "--space", "va", *FAST, "--out", str(out)]) == 0
    emb = np.load(str(out) + ".npy")
    index = json.loads((root / "e" / "mine.index.json").read_text())
    assert emb.shape[0] == 3 and np.isfinite(emb).all()
    assert [item["video"] for item in index["items"]] == [str(mine / "a.mp4"), str(mine / "trip" / "b.mp4"),
                                                          str(mine / "trip" / "c.mp4")]


def test_data_frames_then_image_eval(setup, capsys):
    """``data frames`` turns a labelled video manifest into an image set that ``eval image`` reads."""
    from PIL import Image

    data, root = setup["data"], setup["root"]
    out = root / "frames"
    assert main(["data", "frames", str(data / "probe_motion.jsonl"), str(out)]) == 0
    rows = [json.loads(x) for x in (out / "images.jsonl").read_text().splitlines()]
    src = [json.loads(x) for x in (data / "probe_motion.jsonl").read_text().splitlines()]
    assert [(r["label"], r["split"]) for r in rows] == [(x["label"], x["split"]) for x in src]
    img = np.asarray(Image.open(out / rows[0]["image"]))
    assert img.shape == (32, 32, 3) and img.std() > 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left
    assert main(["eval", "image", "--checkpoint", setup["ckpt"], "--data", str(out / "images.jsonl"),
                 "--strategies", "naive", "--classifier", "logistic", *FAST]) == 0
    assert main(["data", "frames", str(data / "probe_sound.jsonl"), str(root / "frames2")]) == 2
    assert "are not videos" in capsys.readouterr().err


def test_embed_text_with_a_dmvr_vocabulary(setup, capsys):
    """``--vocab`` with a DMVR vocabulary uses DMVR's tokenizer: embeddings equal the text tower on its ids."""
    import torch

    from mmv_torch.weights.resolve import create_model

    words, root = setup["words"], setup["root"]
    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    rows = specials + [w for w in words[1:] if w not in specials][: len(words) - 4]
    assert len(rows) == len(words)
    vocab = root / "dmvr_vocab.txt"
    vocab.write_text("".join(f"{i} {w}\n" for i, w in enumerate(rows)))
    out = root / "e" / "dmvr_text"
    assert main(["embed", "--checkpoint", setup["ckpt"], "--data", str(setup["data"] / "retrieval.jsonl"),
                 "--modality", "text", "--space", "vt", "--vocab", str(vocab), "--word-mask", "no", *FAST,
                 "--out", str(out)]) == 0
    emb = np.load(str(out) + ".npy")
    index = json.loads((root / "e" / "dmvr_text.index.json").read_text())
    assert index["vocab"].endswith("(dmvr)")
    captions = [it["caption"] for it in index["items"]]
    ids = dmvr_tokenizer(vocab, max_words=16)(captions).ids
    with torch.no_grad():
        want = create_model(checkpoint=setup["ckpt"])(text=ids)["text"]["vt"].numpy()
    np.testing.assert_allclose(emb, want, rtol=1e-5, atol=1e-6)
    bad = root / "short_vocab.txt"
    bad.write_text("".join(f"{i} {w}\n" for i, w in enumerate(rows[:-1])))
    assert main(["embed", "--checkpoint", setup["ckpt"], "--data", str(setup["data"] / "retrieval.jsonl"),
                 "--modality", "text", "--vocab", str(bad), *FAST, "--out", str(out)]) == 2
    assert "rows" in capsys.readouterr().err


def test_captions_without_known_words_are_counted_and_left_out(setup, capsys):
    data, root = setup["data"], setup["root"]
    lines = [json.loads(x) for x in (data / "retrieval.jsonl").read_text().splitlines()]
    lines[0]["captions"] = lines[0]["captions"] + ["", "zzzq qqqz"]
    for x in lines:
        x["video"] = str(data / x["video"])
    manifest = root / "noisy_retrieval.jsonl"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = root / "r" / "noisy.json"
    with pytest.warns(UserWarning, match="2 of 8 captions are empty or have no word in the vocabulary"):
        assert main(["eval", "retrieval", "--checkpoint", setup["ckpt"], "--data", str(manifest), *FAST,
                     "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["excluded_captions"] == 2 and report["settings"]["captions"] == 8
    assert report["settings"]["empty_captions"] == 2 and report["settings"]["captions_without_known_words"] == 2
    assert report["metrics"]["text2video"]["queries"] == 6
    emb_out = root / "e" / "noisy_text"
    with pytest.warns(UserWarning, match="their embeddings are identical"):
        assert main(["embed", "--checkpoint", setup["ckpt"], "--data", str(manifest), "--modality", "text", *FAST,
                     "--out", str(emb_out)]) == 0
    index = json.loads((root / "e" / "noisy_text.index.json").read_text())
    assert [it["known_words"] == 0 for it in index["items"]].count(True) == 2
    assert index["captions_without_known_words"] == 2


def test_retrieval_ignores_labels(setup, capsys):
    """Retrieval uses no labels: a manifest whose 'label' values are arbitrary strings is fine."""
    data, root = setup["data"], setup["root"]
    lines = [json.loads(x) for x in (data / "retrieval.jsonl").read_text().splitlines()]
    for i, x in enumerate(lines):
        x["video"], x["label"] = str(data / x["video"]), f"cooking class {i}"
    manifest = root / "labelled_retrieval.jsonl"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = root / "r" / "labelled.json"
    for pair in ("text-video", "audio-video"):
        assert main(["eval", "retrieval", "--checkpoint", setup["ckpt"], "--data", str(manifest), "--pair", pair,
                     *FAST, "--json", str(out)]) == 0


def test_a_checkpoint_that_takes_dmvr_tokens_refuses_a_plain_word_list(setup, capsys):
    import shutil

    from mmv_torch.config import apply_overrides, load_config, save_config

    root, words = setup["root"], setup["words"]
    ckpt = root / "dmvr_ckpt"
    shutil.copytree(setup["bare"], ckpt)
    save_config(apply_overrides(load_config(ckpt / "config.json"), ["data.tokenizer=dmvr"]), ckpt / "config.json")
    plain = root / "plain_words.txt"
    plain.write_text("".join(w + "\n" for w in words))
    common = ["embed", "--checkpoint", str(ckpt), "--data", str(setup["data"] / "retrieval.jsonl"), "--modality",
              "text", *FAST, "--out", str(root / "e" / "dmvr_ckpt")]
    assert main([*common, "--vocab", str(plain)]) == 2
    assert "takes DMVR's tokenizer" in capsys.readouterr().err
    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    rows = specials + [w for w in words[1:] if w not in specials][: len(words) - 4]
    vocab = root / "dmvr_vocab2.txt"
    vocab.write_text("".join(f"{i} {w}\n" for i, w in enumerate(rows)))
    assert main([*common, "--vocab", str(vocab)]) == 0


def test_eval_linear_protocols_are_recorded(setup, capsys):
    """--protocol config: the checkpoint's clip settings with crop + flip only; the JSON says which protocol,
    C grid chosen by cross-validation; an audio probe takes its --test-windows."""
    out = setup["root"] / "r" / "proto.json"
    assert main(["eval", "linear", "--checkpoint", setup["ckpt"], "--data", str(setup["data"] / "probe_motion.jsonl"),
                 *FAST, "--train-epochs", "2", "--test-windows", "2", "--protocol", "config", "--json", str(out)]) == 0
    s = json.loads(out.read_text())["settings"]
    p = s["protocol"]
    assert p["name"] == "config" and p["requested"] == "config" and p["C"].startswith("cross-validation")
    assert (p["num_frames"], p["stride"], p["crop_size"]) == (4, 1, 32)
    assert "no scale or colour" in p["train_augmentation"]
    assert len(s["C_grid"]) > 1 and s["C"] in s["C_grid"] and s["test_windows"] == 2
    out = setup["root"] / "r" / "proto_audio.json"
    assert main(["eval", "linear", "--checkpoint", setup["ckpt"], "--data", str(setup["data"] / "probe_sound.jsonl"),
                 "--modality", "audio", *FAST, "--train-epochs", "1", "--test-windows", "3", "--C", "0.01",
                 "--json", str(out)]) == 0
    s = json.loads(out.read_text())["settings"]
    assert s["test_windows"] == 3 and s["C"] == 0.01 and s["protocol"]["C"] == "given (--C)"
    assert s["protocol"]["test_windows"] == "3 linearly spaced windows"


def test_eval_linear_paper_protocol_esc50(setup, capsys):
    """--protocol esc50 on a manifest with folds: the report records the protocol with the window count given on
    the command line; the multi-label flag is refused in one line."""
    data = setup["data"]
    lines = [json.loads(x) for x in (data / "probe_sound.jsonl").read_text().splitlines()]
    lines = [{**{k: v for k, v in x.items() if k != "split"}, "fold": i % 5 + 1} for i, x in enumerate(lines)]
    manifest = data / "sound_esc.jsonl"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = setup["root"] / "r" / "esc.json"
    args = ["eval", "linear", "--checkpoint", setup["ckpt"], "--data", str(manifest), "--modality", "audio", *FAST]
    with pytest.warns(UserWarning, match="where esc50 has 2,000"):
        assert main([*args, "--protocol", "esc50", "--test-windows", "2", "--C", "0.01", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    p = r["settings"]["paper_protocol"]
    assert p["name"] == "esc50" and p["settings"]["test_windows"]["source"] == "given on the command line"
    assert sorted(r["per_fold"]) == ["1", "2", "3", "4", "5"] and r["settings"]["C"] == 0.01
    assert main([*args, "--protocol", "esc50", "--multilabel"]) == 2
    assert "--multilabel does not apply" in capsys.readouterr().err
