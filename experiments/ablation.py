"""A powered ablation of the paper's findings in miniature: each arm trained over several seeds on the
synthetic narrated videos, where the fine granularity (the sound class: audio) and the coarse one (the
narrated object and motion: text) are different factors of a clip (docs/synthetic_data.md).

    python experiments/ablation.py --out runs/ablation --seeds 0 1 2 3 4 --steps 80 --clips 512   # docs/ablation.md
    python experiments/ablation.py --out /tmp/abl --seeds 0 1 --steps 4 --clips 48 --smoke   # minutes

Arms (each the demo's network, ``mmv_torch.demo.demo_config``, with the arm's overrides; the same seeds, so
arms are compared seed by seed):

==================  ========================================================================================
comparison          arms (the paper's expected winner first)
==================  ========================================================================================
``graph``           FAC (default) vs shared vs disjoint (``model.graph``)
``milnce``          MIL-NCE over K = 3 narrations (tiny's default) vs NCE with K = 1 (``data.num_candidates``;
                    the synthetic clips have at most about 3 narrations in a window, so K = 5 trains as K = 3)
``batch``           contrastive batch 64 by gradient caching (4 x 16) vs 16 (``train.contrastive_batch``)
``form``            ``loss.form`` joint (today's default) vs mean (the previous one)
``augment``         ``data.augment`` dmvr (today's default) vs default (the previous one)
==================  ========================================================================================

Arms with the same resolved config (the first arm of every comparison is the demo default) share one run per
seed, so a seed costs 7 trainings, one of them (the cached batch) with 4 x the clips per step.

Per run: zero-shot text->video R@1/R@5 in S_vt (coarse), the linear sound probe on the audio ``repr``
(fine) and the linear motion probe on the video ``repr`` (the demo's probes). Per arm: mean, std and a
bootstrap 95% interval of the mean over seeds; per comparison: the paired (same seed) difference of each
metric with its bootstrap 95% interval, and a verdict: ``holds`` (interval above 0 in the paper's
direction), ``reversed`` (below 0) or ``unresolved`` (the interval holds 0); with fewer than 5 seeds, none.
Metrics move in steps of 100 / (number of test clips or captions): 64 retrieval clips, 128 probe-test clips.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

SHARED_FIX = ("model.spaces.vt.dim=64", 'model.spaces.vt.first={"hidden":[64],"inner_bn":true,"bn_after_proj":true}')
ARMS: dict[str, dict[str, tuple[str, ...]]] = {
    "graph": {"fac": (), "shared": ("model.graph=shared", *SHARED_FIX), "disjoint": ("model.graph=disjoint",)},
    "milnce": {"K=3": (), "K=1": ("data.num_candidates=1",)},
    "batch": {"N=64 cached": ("train.contrastive_batch=64",), "N=16": ()},
    "form": {"joint": (), "mean": ("loss.form=mean",)},
    "augment": {"dmvr": (), "default": ("data.augment=default",)},
}
METRICS = ("t2v_R@1", "t2v_R@5", "sound_top1", "motion_top1")
MIN_SEEDS = 5
"""Fewer seeds give no verdict: a percentile bootstrap over 2-4 values has intervals far too narrow."""


def bootstrap_ci(values: np.ndarray, n: int = 10000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of ``values`` (resampled with replacement)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(n, len(values)), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def run_one(out: Path, data_dir: Path, overrides: tuple[str, ...], seed: int, steps: int, workers: int
            ) -> dict[str, float]:
    """Train the demo network with ``overrides`` for ``steps`` steps on ``data_dir``; its metrics (in %)."""
    from mmv_torch import demo
    from mmv_torch.train.loop import train
    from mmv_torch.weights.folder import VOCAB_FILE
    from mmv_torch.weights.resolve import create_model

    s = demo.DemoSettings(steps=steps, seed=seed, workers=workers, overrides=overrides, eval_windows=1,
                          probe_epochs=1)
    cfg = demo.demo_config(s)
    done = out / "metrics.json"
    if done.is_file():
        return json.loads(done.read_text())
    summary = train(cfg, [str(data_dir / "pretrain.jsonl")], out / "run", progress=False, tensorboard=False)
    model = create_model(checkpoint=summary["export"])
    retrieval = demo._retrieval(model, data_dir, cfg, Path(summary["export"]) / VOCAB_FILE, s)[0]
    metrics = {"t2v_R@1": 100 * retrieval["t2v"]["R@1"], "t2v_R@5": 100 * retrieval["t2v"]["R@5"],
               "sound_top1": 100 * demo.probe_task(model, data_dir, cfg, s, "sound")["metrics"]["test_top1"],
               "motion_top1": 100 * demo.probe_task(model, data_dir, cfg, s, "motion")["metrics"]["test_top1"],
               "final_loss": summary["final_loss"], "wall_s": summary["wall_s"]}
    done.write_text(json.dumps(metrics))
    return metrics


def run_key(overrides: tuple[str, ...], seed: int, steps: int) -> str:
    """A folder name of the resolved config: arms that resolve to the same config share their run."""
    import hashlib

    from mmv_torch import demo
    from mmv_torch.config import config_to_dict

    cfg = demo.demo_config(demo.DemoSettings(steps=steps, seed=seed, overrides=overrides))
    return "run_" + hashlib.sha1(json.dumps(config_to_dict(cfg), sort_keys=True).encode()).hexdigest()[:10]


def summarize(runs: dict[str, dict[str, dict[int, dict[str, float]]]]) -> dict[str, Any]:
    """Per comparison: per arm mean/std/interval of every metric; the paired differences to the first arm."""
    out: dict[str, Any] = {}
    for comp, arms in runs.items():
        names = list(arms)
        seeds = sorted(set.intersection(*(set(arms[a]) for a in names)))
        table: dict[str, Any] = {"seeds": seeds, "arms": {}, "differences": {}}
        for a in names:
            table["arms"][a] = {m: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                                    "ci95": bootstrap_ci(v)}
                                for m in METRICS for v in [np.array([arms[a][s][m] for s in seeds])]}
        for b in names[1:]:
            diffs = {}
            for m in METRICS:
                d = np.array([arms[names[0]][s][m] - arms[b][s][m] for s in seeds])
                lo, hi = bootstrap_ci(d)
                verdict = ("holds" if lo > 0 else "reversed" if hi < 0 else "unresolved") if len(seeds) >= MIN_SEEDS \
                    else f"no verdict (< {MIN_SEEDS} seeds)"
                diffs[m] = {"mean": float(d.mean()), "ci95": (lo, hi), "verdict": verdict}
            table["differences"][f"{names[0]} - {b}"] = diffs
        out[comp] = table
    return out


def markdown(summary: dict[str, Any], header: str) -> str:
    """The tables of :func:`summarize` as markdown."""
    lines = [header, ""]
    for comp, t in summary.items():
        lines += [f"### {comp} ({len(t['seeds'])} seeds: {t['seeds']})", "",
                  "| arm | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
        for a, ms in t["arms"].items():
            cells = [f"{ms[m]['mean']:.1f} ± {ms[m]['std']:.1f} [{ms[m]['ci95'][0]:.1f}, {ms[m]['ci95'][1]:.1f}]"
                     for m in METRICS]
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        for name, ds in t["differences"].items():
            cells = [f"{d['mean']:+.1f} [{d['ci95'][0]:+.1f}, {d['ci95'][1]:+.1f}] {d['verdict']}" for d in ds.values()]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="runs and data go here (finished runs are reused)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--clips", type=int, default=512, help="pretraining clips per data seed")
    p.add_argument("--comparisons", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="tiny probe/retrieval sets: checks the harness, no power")
    p.add_argument("--md", dest="md_out", type=Path, help="write the markdown tables here")
    args = p.parse_args(argv)
    import torch

    from mmv_torch.data.synthetic import GeneratorOptions, write_dataset
    from mmv_torch.demo import EASY

    torch.set_num_threads(1)
    t0 = time.time()
    n_probe, n_ret = (16, 8) if args.smoke else (128, 64)
    runs: dict[str, dict[str, dict[int, dict[str, float]]]] = {}
    for seed in args.seeds:
        data_dir = args.out / f"data_seed{seed}"
        if not (data_dir / "pretrain.jsonl").is_file():
            write_dataset(data_dir, args.clips, seed, size=64, workers=args.workers, num_probe_train=n_probe,
                          num_probe_test=n_probe, num_retrieval=n_ret, options=GeneratorOptions(**EASY))
        for comp in args.comparisons:
            for arm, over in ARMS[comp].items():
                m = run_one(args.out / run_key(over, seed, args.steps) / f"seed{seed}", data_dir, over, seed,
                            args.steps, args.workers)
                runs.setdefault(comp, {}).setdefault(arm, {})[seed] = m
                print(f"{time.time() - t0:6.0f} s  seed {seed}  {comp}/{arm}: "
                      + ", ".join(f"{k} {m[k]:.1f}" for k in METRICS), flush=True)
    summary = summarize(runs)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    text = markdown(summary, f"Ablation: {len(args.seeds)} seeds, {args.steps} steps, {args.clips} clips"
                    f"{' (smoke run: no power)' if args.smoke else ''}; {time.time() - t0:.0f} s. "
                    "Cells: mean ± std [bootstrap 95% interval]; difference rows: first arm minus this arm.")
    print(text)
    if args.md_out:
        args.md_out.write_text(text + "\n")
    return summary


if __name__ == "__main__":
    main()
