"""Checks behind the README's demo section, on a finished ``make demo`` folder.

    python scripts/demo_checks.py supervised --demo runs/demo [--steps 1400] [--set KEY=VALUE ...]
    python scripts/demo_checks.py recheck --demo runs/demo [--num-test 800]
    python scripts/demo_checks.py text --demo runs/demo

``supervised``: the demo's video tower (``mmv_torch.demo.demo_config`` plus ``--set`` overrides) and a
linear layer trained with cross-entropy on the motion labels of the demo's pretraining clips (read from
their sidecar JSON files; Adam, the demo's lr with warm-up and cosine decay, batch 16, training
augmentation; its manifest goes to ``DEMO/checks``), then the demo's frozen motion probe on its
``repr``. The ceiling of the motion probe for this tower, data and training length when the labels are
given.

``recheck``: the demo's motion and sound probes of the trained and the random-initialisation network (built
as the demo builds it) with ``--num-test`` probe-test clips instead of the demo's 160 (written once to
``DEMO/recheck`` with the demo's generator settings and seed: the demo's test clips and more), the demo's
probe-train clips unchanged: a smaller standard error than the demo's table.

``text``: how much of the variance of the text embeddings in S_vt the object class and the motion class
explain, for the trained and the random-initialisation text tower, over every sentence "okay so the
<colour> <noun> <verb>" of the grammar (8 objects x 8 motions x 3 nouns x 3 verbs x 2 palette colours).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mmv_torch import demo
from mmv_torch.config import apply_overrides
from mmv_torch.models.mmv import build_video_backbone, create_model
from mmv_torch.train import lr_at


def _settings(demo_dir: Path) -> demo.DemoSettings:
    saved = json.loads((demo_dir / "results.json").read_text())["settings"]
    saved["overrides"] = tuple(saved.get("overrides", ()))
    return demo.DemoSettings(**saved)


class _VideoOnly(torch.nn.Module):
    """Exposes a bare video backbone the way the probes call a model: ``model(video=x)["video"]["repr"]``."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, video: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
        return {"video": {"repr": self.backbone(video)}}


def supervised(demo_dir: Path, steps: int, overrides: list[str], seed: int) -> dict[str, float]:
    s = _settings(demo_dir)
    cfg = apply_overrides(demo.demo_config(s), overrides) if overrides else demo.demo_config(s)
    data, work = demo_dir / "data", demo_dir / "checks"
    work.mkdir(exist_ok=True)
    rows = []
    for line in (data / "pretrain.jsonl").read_text().splitlines():
        video = (data / json.loads(line)["video"]).resolve()
        side = json.loads(video.with_suffix(".json").read_text())
        rows.append({"video": str(video), "label": side["labels"]["motion"], "split": "train"})
    manifest = work / "supervised_motion.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train_ds = demo._labelled(manifest, cfg, "video", "train", True, 1, seed)
    torch.manual_seed(seed)
    backbone = build_video_backbone(cfg.model.video, cfg.model.bn)
    net = torch.nn.Sequential(backbone, torch.nn.Linear(backbone.out_dim, len(train_ds.classes)))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.train.lr)
    warmup = max(1, steps // 10)  # as demo_config sets it for the demo's training length
    step, epoch, t0 = 0, 0, time.time()
    while step < steps:
        train_ds.set_epoch(epoch)
        epoch += 1
        loader = torch.utils.data.DataLoader(train_ds, batch_size=16, shuffle=True, num_workers=s.workers,
                                             generator=torch.Generator().manual_seed(seed + epoch), drop_last=True)
        for batch in loader:
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg.train.lr, warmup, steps)
            net.train()
            loss = torch.nn.functional.cross_entropy(net(batch["video"]), batch["label"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % 100 == 0 or step == steps:
                print(f"step {step}/{steps}: loss {loss.item():.3f} ({time.time() - t0:.0f} s)", flush=True)
            if step >= steps:
                break
    probe = demo._probe(_VideoOnly(backbone).eval(), data, cfg, s, "motion")
    return {"train_s": time.time() - t0, "final_loss": float(loss.item()),
            "motion_probe_top1": probe["metrics"]["test_top1"]}


def _networks(demo_dir: Path, s: demo.DemoSettings) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The demo's trained network and its random-initialisation baseline (as ``run_demo`` builds it)."""
    trained = create_model(checkpoint=demo_dir / "run" / "export").eval()
    random_init, _ = demo.random_init_baseline(trained, demo.demo_config(s), demo_dir / "data", demo_dir / "run", s)
    return trained, random_init


def recheck(demo_dir: Path, num_test: int) -> dict[str, float]:
    from mmv_torch.data.synthetic import GENERATOR_VERSION, GeneratorOptions, write_dataset

    s = _settings(demo_dir)
    cfg = demo.demo_config(s)
    data, extra = demo_dir / "data", demo_dir / "recheck"
    stamp = extra / "recheck.json"
    want = {"num_test": num_test, "seed": s.seed, "easy": s.easy, "generator_version": GENERATOR_VERSION}
    if not (stamp.is_file() and json.loads(stamp.read_text()) == want):
        options = GeneratorOptions(**demo.EASY) if s.easy else None
        write_dataset(extra, 0, s.seed, size=64, workers=s.workers, num_probe_train=0, num_probe_test=num_test,
                      num_retrieval=0, options=options)
        stamp.write_text(json.dumps(want))
    trained, random_init = _networks(demo_dir, s)
    combined = extra / "combined"
    combined.mkdir(exist_ok=True)
    out: dict[str, float] = {}
    for task, key in (("motion", "video"), ("sound", "audio")):
        rows = [json.loads(x) for x in (data / f"probe_{task}.jsonl").read_text().splitlines()]
        train_rows = [{**r, key: str((data / r[key]).resolve())} for r in rows if r["split"] == "train"]
        test_rows = [{**r, key: str((extra / r[key]).resolve())}
                     for r in map(json.loads, (extra / f"probe_{task}.jsonl").read_text().splitlines())]
        (combined / f"probe_{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train_rows + test_rows))
        for name, model in (("trained", trained), ("random_init", random_init)):
            out[f"{task}/{name}"] = demo._probe(model, combined, cfg, s, task)["metrics"]["test_top1"]
    return out


@torch.no_grad()
def text_variance(demo_dir: Path) -> dict[str, float]:
    from mmv_torch.data.synthetic import MOTIONS, OBJECTS
    from mmv_torch.data.text import Tokenizer, Vocabulary

    s = _settings(demo_dir)
    trained, random_init = _networks(demo_dir, s)
    tok = Tokenizer(Vocabulary.from_word_list(demo_dir / "run" / "export" / "vocab.txt"), max_words=16)
    rows = [(f"okay so the {colour} {noun} {verb}", o.name, m.name)
            for o in OBJECTS for m in MOTIONS for noun in o.nouns for verb in m.verbs for colour in o.palette]
    encoded = [tok.encode(text) for text, _, _ in rows]
    ids = torch.as_tensor(np.stack([e[0] for e in encoded]))
    mask = torch.as_tensor(np.stack([e[1] for e in encoded]))
    out: dict[str, float] = {}
    for name, model in (("trained", trained), ("random_init", random_init)):
        emb = torch.nn.functional.normalize(model(text=ids, word_mask=mask)["text"]["vt"], dim=-1).double().numpy()
        centre = emb.mean(0)
        total = ((emb - centre) ** 2).sum(1).mean()
        for factor, col in (("object", 1), ("motion", 2)):
            labels = np.array([r[col] for r in rows])
            spread = {c: ((emb[labels == c].mean(0) - centre) ** 2).sum() for c in set(labels)}
            between = np.mean([spread[c] for c in labels])
            out[f"{factor}/{name}"] = float(between / total)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="check", required=True)
    p = sub.add_parser("supervised", help="motion labels given: the probe's ceiling for the demo's video tower")
    p.add_argument("--demo", default="runs/demo", type=Path)
    p.add_argument("--steps", type=int, default=1400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides on the demo's")
    p = sub.add_parser("recheck", help="the demo's probes on more probe-test clips")
    p.add_argument("--demo", default="runs/demo", type=Path)
    p.add_argument("--num-test", type=int, default=800)
    p = sub.add_parser("text", help="variance of the text embeddings explained by the object and by the motion")
    p.add_argument("--demo", default="runs/demo", type=Path)
    args = parser.parse_args(argv)
    if not (args.demo / "results.json").is_file():
        parser.error(f"{args.demo} holds no finished demo (results.json); run `make demo` first")
    torch.set_num_threads(_settings(args.demo).threads)
    if args.check == "supervised":
        res = supervised(args.demo, args.steps, args.set, args.seed)
        print("| supervised steps | final loss | motion probe top-1 (%) | time (s) |\n|---|---|---|---|")
        top1 = 100 * res["motion_probe_top1"]
        print(f"| {args.steps} | {res['final_loss']:.3f} | {top1:.1f} | {res['train_s']:.0f} |")
    elif args.check == "text":
        res = text_variance(args.demo)
        print("| share of the S_vt text-embedding variance | trained | random init |\n|---|---|---|")
        for factor in ("object", "motion"):
            print(f"| {factor} class (%) | {100 * res[f'{factor}/trained']:.1f} | "
                  f"{100 * res[f'{factor}/random_init']:.1f} |")
    else:
        res = recheck(args.demo, args.num_test)
        print(f"| probe ({args.num_test} test clips) | trained | random init |\n|---|---|---|")
        for task in ("motion", "sound"):
            print(f"| {task} top-1 (%) | {100 * res[f'{task}/trained']:.1f} | {100 * res[f'{task}/random_init']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
