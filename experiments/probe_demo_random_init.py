"""The demo's motion probe with a linear-probe protocol, trained network against the random-init baseline.

    python experiments/probe_demo_random_init.py runs/demo [--protocol config|official-cv] [--quick]

Loads ``DEMO/run/export``, builds the demo's random-init baseline (same architecture and word table,
BatchNorm statistics calibrated on pretraining batches: ``mmv_torch.demo.random_init_baseline``) and runs
``eval_linear`` (StandardScaler + LinearSVC, 10 augmented passes, 10 test windows) on
``DEMO/data/probe_motion.jsonl`` for both; prints one JSON line per network. ``--quick`` for a folder made
by ``mmv-torch demo --quick``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmv_torch import create_model
from mmv_torch.config import load_config
from mmv_torch.data.sources import manifest_source
from mmv_torch.demo import QUICK, DemoSettings, random_init_baseline
from mmv_torch.eval.pipelines import LoaderOptions, eval_linear


def main() -> None:
    """Parse the options, probe both networks, print the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("demo", type=Path)
    ap.add_argument("--protocol", default="config")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    s = QUICK if args.quick else DemoSettings()
    cfg = load_config(args.demo / "run" / "config.json")
    trained = create_model(checkpoint=args.demo / "run" / "export")
    random_init, _ = random_init_baseline(trained, cfg, args.demo / "data", args.demo / "run", s)
    for name, model in (("trained", trained), ("random_init", random_init)):
        source = manifest_source(args.demo / "data" / "probe_motion.jsonl")
        r = eval_linear(model, cfg, source, LoaderOptions(8, args.workers, 0), protocol=args.protocol)
        print(json.dumps({"network": name, "protocol": r["settings"]["protocol"]["name"], "C": r["settings"]["C"],
                          **r["metrics"]}))


if __name__ == "__main__":
    main()
