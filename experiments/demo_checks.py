"""Checks behind the demo's numbers in docs/demo.md, on a finished ``make demo`` folder.

    python experiments/demo_checks.py supervised --demo runs/demo [--steps 1400] [--set KEY=VALUE ...]
    python experiments/demo_checks.py recheck --demo runs/demo [--num-test 800]
    python experiments/demo_checks.py text --demo runs/demo

``supervised``: ``eval finetune`` (:func:`mmv_torch.eval.pipelines.eval_finetune`) of the demo's video
tower at random initialisation (``mmv_torch.demo.demo_config`` plus ``--set`` overrides) with a linear
head on the motion labels of the demo's pretraining clips (read from their sidecar JSON files; the
demo's lr for head and backbone, warm-up then cosine decay, batch 16, about ``--steps`` steps; its
manifest goes to ``DEMO/checks``), then the demo's frozen motion probe on the tuned tower's ``repr``.
The ceiling of the motion probe for this tower, data and training length when the labels are given.

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
from mmv_torch.weights.resolve import create_model


def _settings(demo_dir: Path) -> demo.DemoSettings:
    saved = json.loads((demo_dir / "results.json").read_text())["settings"]
    saved["overrides"] = tuple(saved.get("overrides", ()))
    return demo.DemoSettings(**saved)


def supervised(demo_dir: Path, steps: int, overrides: list[str], seed: int) -> dict[str, float]:
    """Fine-tune the untrained demo video tower on the pretraining clips' motion labels, then probe it."""
    from mmv_torch.data.sources import manifest_source
    from mmv_torch.eval.pipelines import LoaderOptions, eval_finetune
    from mmv_torch.models.mmv import MMV

    s = _settings(demo_dir)
    cfg = apply_overrides(demo.demo_config(s), overrides) if overrides else demo.demo_config(s)
    data, work = demo_dir / "data", demo_dir / "checks"
    work.mkdir(exist_ok=True)
    rows = []
    for line in (data / "pretrain.jsonl").read_text().splitlines():
        video = (data / json.loads(line)["video"]).resolve()
        side = json.loads(video.with_suffix(".json").read_text())
        rows.append({"video": str(video), "label": side["labels"]["motion"], "split": "train"})
    for line in (data / "probe_motion.jsonl").read_text().splitlines():  # scored during fine-tuning
        row = json.loads(line)
        if row["split"] == "test":
            rows.append({**row, "video": str((data / row["video"]).resolve())})
    manifest = work / "supervised_motion.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    batch = 16
    num_train = sum(r["split"] == "train" for r in rows)
    epochs = max(1, round(steps * batch / num_train))
    torch.manual_seed(seed)
    model = MMV(cfg.model)
    t0 = time.time()
    res = eval_finetune(model, cfg, manifest_source(manifest), LoaderOptions(batch, s.workers, seed),
                              work / f"supervised_{steps}", epochs=epochs, lr=cfg.train.lr, backbone_lr=cfg.train.lr,
                              weight_decay=0.0, warmup_steps=max(1, steps // 10), test_windows=s.eval_windows)
    train_s = time.time() - t0
    probe = demo.probe_task(model.eval(), data, cfg, s, "motion")
    return {"train_s": train_s, "epochs": epochs, "finetune_top1": res["metrics"]["test_top1"],
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
            out[f"{task}/{name}"] = demo.probe_task(model, combined, cfg, s, task)["metrics"]["test_top1"]
    return out


@torch.no_grad()
def text_variance(demo_dir: Path) -> dict[str, float]:
    from mmv_torch.data.synthetic import MOTIONS, OBJECTS
    from mmv_torch.data.text.tokenizer import Tokenizer, Vocabulary

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
        print("| supervised steps | epochs | fine-tuned top-1 (%) | motion probe top-1 (%) | time (s) |\n"
              "|---|---|---|---|---|")
        print(f"| {args.steps} | {res['epochs']} | {100 * res['finetune_top1']:.1f} | "
              f"{100 * res['motion_probe_top1']:.1f} | {res['train_s']:.0f} |")
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
