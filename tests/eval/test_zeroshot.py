"""Zero-shot classification: templates, class embeddings and top-k on a labelled set, in Python and as
``mmv-torch eval zeroshot``."""

import json
import warnings

import av
import numpy as np
import pytest
import torch

from mmv_torch.config import apply_overrides, get_preset
from mmv_torch.data.sources import manifest_source
from mmv_torch.data.text.tokenizer import Tokenizer, Vocabulary
from mmv_torch.eval.pipelines import LoaderOptions
from mmv_torch.eval.zeroshot import TEMPLATES, eval_zeroshot, prompt_name, read_templates, zero_shot_classifier

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}
WORDS = ["<pad>", "red", "green", "blue", "video", "person", "sound"]


class ColourModel(torch.nn.Module):
    """A stand-in MMV whose ``vt`` space is RGB: a video embeds to its mean colour, a sentence to the sum of
    its colour words' one-hot colours (other words embed to nothing)."""

    def __init__(self) -> None:
        super().__init__()
        table = torch.zeros(len(WORDS), 3)
        table[1:4] = torch.eye(3)
        self.table = torch.nn.Parameter(table, requires_grad=False)

    def forward(self, video=None, text=None, word_mask=None, audio=None):
        out = {}
        if video is not None:
            rgb = video.mean(dim=(2, 3, 4))
            out["video"] = {"vt": rgb - rgb.mean(dim=1, keepdim=True), "repr": rgb}
        if text is not None:
            e = self.table[text] * (word_mask if word_mask is not None else torch.ones_like(text, dtype=torch.bool)
                                    ).unsqueeze(-1)
            out["text"] = {"vt": e.sum(-2) - e.sum(-2).mean(-1, keepdim=True)}
        return out


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """Solid-colour videos with noise, four per class, as a labelled manifest (test split) and a tokenizer."""
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    lines = []
    for name, rgb in COLOURS.items():
        for i in range(4):
            path = root / f"{name}{i}.mp4"
            with av.open(str(path), "w") as out:
                stream = out.add_stream("libx264", rate=8)
                stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
                for _ in range(8):
                    pixels = np.clip(np.array(rgb) + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
                    for p in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                        out.mux(p)
                for p in stream.encode():
                    out.mux(p)
            lines.append({"video": path.name, "label": name, "split": "test"})
    manifest = root / "colours.jsonl"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return {"root": root, "manifest": manifest, "tokenizer": Tokenizer(Vocabulary(WORDS), max_words=8)}


def test_prompt_names_and_templates(tmp_path):
    assert prompt_name("ApplyEyeMakeup") == "apply eye makeup"
    assert prompt_name("playing_guitar") == "playing guitar"
    assert prompt_name("dog-bark") == "dog bark"
    assert read_templates("auto", "audio")[1] == "sound" and read_templates(None, "video", "esc50")[1] == "sound"
    assert read_templates("auto", "video", "ucf101") == (list(TEMPLATES["action"]), "action")
    f = tmp_path / "t.txt"
    f.write_text("# mine\na photo of {}\n\n{} again\n")
    assert read_templates(f)[0] == ["a photo of {}", "{} again"]
    f.write_text("no slot here\n")
    with pytest.raises(ValueError, match="must contain"):
        read_templates(f)
    with pytest.raises(ValueError, match="neither one of"):
        read_templates(tmp_path / "missing.txt")


def test_classifier_rows_are_normalised_template_averages(colours):
    model, tok = ColourModel(), colours["tokenizer"]
    w = zero_shot_classifier(model, tok, ["red", "blue"], ["a {} video", "{}"])
    assert w.shape == (2, 3)
    torch.testing.assert_close(w.norm(dim=-1), torch.ones(2))
    assert int(w[0].argmax()) == 0 and int(w[1].argmax()) == 2
    unknown = zero_shot_classifier(model, tok, ["purple"], ["{}"])
    assert float(unknown.abs().sum()) == 0.0


def test_zero_shot_beats_chance_on_a_labelled_set(colours):
    source = manifest_source(colours["manifest"])
    cfg = apply_overrides(get_preset("tiny"), {"data.num_frames": 4, "data.fps": 8.0, "data.eval_crop_size": 32,
                                               "data.resize_short": 32})
    result = eval_zeroshot(ColourModel(), cfg, source, LoaderOptions(batch_size=4), colours["tokenizer"],
                           templates=["a {} video", "a person in {}"])
    assert result["settings"]["classes"] == 3 and result["settings"]["items"] == 12
    assert result["metrics"]["test_top1"] > result["settings"]["chance_top1"] + 0.5
    assert result["metrics"]["test_top1"] == 1.0
    # shuffled labels: the same scores judged against the wrong classes fall to chance or below
    lines = [json.loads(x) for x in colours["manifest"].read_text().splitlines()]
    for x, label in zip(lines, ["green"] * 4 + ["blue"] * 4 + ["red"] * 4):
        x["label"] = label
    wrong = colours["root"] / "wrong.jsonl"
    wrong.write_text("".join(json.dumps(x) + "\n" for x in lines))
    bad = eval_zeroshot(ColourModel(), cfg, manifest_source(wrong), LoaderOptions(batch_size=4),
                        colours["tokenizer"], templates=["{}"])
    assert bad["metrics"]["test_top1"] == 0.0


def test_eval_zeroshot_command_writes_the_report(colours, tmp_path, capsys):
    from mmv_torch.cli.main import main
    from tests.helpers.model_utils import noise_calibrated_model, save_checkpoint_folder

    cfg = apply_overrides(get_preset("tiny"), {"model.text.vocab_size": len(WORDS), "data.num_frames": 4,
                                               "data.eval_crop_size": 32, "data.resize_short": 32})
    model = noise_calibrated_model(cfg, video=torch.rand(4, 3, 4, 32, 32), text=torch.randint(1, len(WORDS), (4, 4)))
    ckpt = save_checkpoint_folder(model, cfg, tmp_path / "ckpt")
    (ckpt / "vocab.txt").write_text("".join(w + "\n" for w in WORDS))
    out = tmp_path / "zs.json"
    assert main(["eval", "zeroshot", "--checkpoint", str(ckpt), "--data", str(colours["manifest"]), "--workers", "0",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report) == {"task", "metrics", "settings"}
    assert set(report["metrics"]) == {"test_top1", "test_top5"} and report["metrics"]["test_top5"] == 1.0
    assert report["settings"]["templates"] == "action" and report["settings"]["checkpoint"] == str(ckpt)
    assert "| test_top1 |" in out.with_suffix(".md").read_text()
    assert main(["eval", "zeroshot", "--checkpoint", str(ckpt), "--data", str(colours["manifest"]),
                 "--templates", str(tmp_path / "none.txt")]) == 2
    assert "neither one of" in capsys.readouterr().err


def test_classnames_give_the_words_of_labels_the_vocabulary_lacks(colours, tmp_path):
    """Labels that are no word of the vocabulary (as the synthetic motions' stems: `bounce`, while the narrations
    say `bounces`) score 0 for every class; a --classnames file maps them to words the text tower knows."""
    from mmv_torch.eval.zeroshot import read_classnames

    lines = [json.loads(x) for x in colours["manifest"].read_text().splitlines()]
    for x in lines:
        x["label"] = x["label"][0] + "x"  # rx, gx, bx
    coded = colours["root"] / "coded.jsonl"
    coded.write_text("".join(json.dumps(x) + "\n" for x in lines))
    cfg = apply_overrides(get_preset("tiny"), {"data.num_frames": 4, "data.fps": 8.0, "data.eval_crop_size": 32,
                                               "data.resize_short": 32})

    def run(classnames=None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the classes without a known word
            return eval_zeroshot(ColourModel(), cfg, manifest_source(coded), LoaderOptions(batch_size=4),
                                 colours["tokenizer"], templates=["{}"], classnames=classnames)

    without = run()
    assert without["settings"]["classes_without_known_words"] == 3 and without["metrics"]["test_top1"] < 0.5
    names = tmp_path / "classnames.json"
    names.write_text(json.dumps({"rx": "red", "gx": ["green", "green video"], "bx": ["blue"], "other": "x"}))
    with_names = run(names)
    assert with_names["metrics"]["test_top1"] == 1.0 and with_names["settings"]["classnames"] == str(names)
    assert read_classnames(names)["gx"] == ["green", "green video"]
    for bad, match in (("[1]", "JSON object"), ('{"rx": []}', "non-empty list"), ("{", "not a readable JSON")):
        names.write_text(bad)
        with pytest.raises(ValueError, match=match):
            read_classnames(names)
    names.write_text(json.dumps({"purple": "red"}))
    with pytest.raises(ValueError, match="none of its labels"):
        run(names)


def test_synthetic_class_phrases_are_narration_words_for_every_label():
    from mmv_torch.data.synthetic import MOTION_NAMES, OBJECT_NAMES, class_phrases, vocabulary_words

    words, phrases = set(vocabulary_words()), class_phrases()
    assert set(phrases) == set(MOTION_NAMES) | set(OBJECT_NAMES)
    assert not any(m in words for m in MOTION_NAMES)  # why the labels alone fail
    assert all(w in words for p in phrases.values() for x in p for w in x.split())



def test_the_cli_takes_the_classnames_json_beside_the_manifest(colours, tmp_path, capsys):
    """`eval zeroshot` without --classnames uses the classnames.json that `data synthetic` writes beside its
    manifests (the motion labels are stems no narration says); `--classnames none` does not, and a file naming
    none of the manifest's classes is left out."""
    from mmv_torch.cli.main import main
    from tests.helpers.model_utils import noise_calibrated_model, save_checkpoint_folder

    cfg = apply_overrides(get_preset("tiny"), {"model.text.vocab_size": len(WORDS), "data.num_frames": 4,
                                               "data.eval_crop_size": 32, "data.resize_short": 32})
    model = noise_calibrated_model(cfg, video=torch.rand(4, 3, 4, 32, 32), text=torch.randint(1, len(WORDS), (4, 4)))
    ckpt = save_checkpoint_folder(model, cfg, tmp_path / "ckpt")
    (ckpt / "vocab.txt").write_text("".join(w + "\n" for w in WORDS))
    lines = [json.loads(x) for x in colours["manifest"].read_text().splitlines()]
    folder = tmp_path / "coded"
    folder.mkdir()
    for x in lines:
        x["label"] = x["label"][0] + "x"  # rx, gx, bx: no word of the vocabulary
        x["video"] = str(colours["manifest"].parent / x["video"])
    manifest = folder / "probe.jsonl"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    names = folder / "classnames.json"
    bare = tmp_path / "bare.txt"
    bare.write_text("{}\n")  # the class words alone: a class without a known word has none

    def run(choice: str) -> dict:
        out = tmp_path / f"{choice}.json"
        assert main(["eval", "zeroshot", "--checkpoint", str(ckpt), "--data", str(manifest), "--workers", "0",
                     "--json", str(out), "--classnames", choice, "--templates", str(bare)]) == 0
        return json.loads(out.read_text())["settings"]

    names.write_text(json.dumps({"rx": "red", "gx": "green", "bx": "blue"}))
    auto = run("auto")
    assert auto["classnames"] == str(names) and auto["classes_without_known_words"] == 0
    off = run("none")
    assert off["classnames"] is None and off["classes_without_known_words"] == 3
    names.write_text(json.dumps({"purple": "red"}))  # another data set's file: not used, no error
    other = run("auto")
    assert other["classnames"] is None and other["classes_without_known_words"] == 3
