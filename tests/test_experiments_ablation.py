"""experiments/ablation.py: the statistics of the powered ablation (bootstrap intervals, paired differences,
verdicts) and the sharing of runs between arms with the same config."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "ablation.py"


@pytest.fixture(scope="module")
def abl():
    spec = importlib.util.spec_from_file_location("ablation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_more_seeds(abl):
    rng = np.random.default_rng(0)
    few, many = rng.normal(10, 2, 5), rng.normal(10, 2, 80)
    lo, hi = abl.bootstrap_ci(few)
    assert lo < few.mean() < hi
    lo2, hi2 = abl.bootstrap_ci(many)
    assert hi2 - lo2 < hi - lo and lo2 < 10 < hi2
    assert all(np.isnan(abl.bootstrap_ci(np.array([1.0]))))


def test_paired_differences_and_verdicts(abl):
    base = {s: {m: 50.0 + s for m in abl.METRICS} for s in range(5)}
    better = {s: {**{m: 50.0 + s - 3 for m in abl.METRICS}, "sound_top1": 50.0 + s + 2} for s in range(5)}
    noisy = {s: {m: 50.0 + s + (1 if s % 2 else -1) for m in abl.METRICS} for s in range(5)}
    out = abl.summarize({"x": {"a": base, "b": better, "c": noisy}})["x"]
    d = out["differences"]
    assert d["a - b"]["t2v_R@1"]["verdict"] == "holds" and d["a - b"]["t2v_R@1"]["mean"] == pytest.approx(3.0)
    assert d["a - b"]["sound_top1"]["verdict"] == "reversed"
    assert d["a - c"]["t2v_R@1"]["verdict"] == "unresolved"  # seed noise of ±1 around no difference
    assert out["arms"]["a"]["t2v_R@1"]["mean"] == pytest.approx(52.0) and out["seeds"] == [0, 1, 2, 3, 4]
    assert "| a - b | +3.0" in abl.markdown({"x": out}, "h")
    two = abl.summarize({"x": {"a": {s: base[s] for s in (0, 1)}, "b": {s: better[s] for s in (0, 1)}}})["x"]
    assert two["differences"]["a - b"]["t2v_R@1"]["verdict"] == "no verdict (< 5 seeds)"


def test_arms_with_the_same_config_share_a_run(abl):
    default = abl.run_key((), 0, 10)
    same = [arm for arms in abl.ARMS.values() for arm, over in arms.items() if abl.run_key(over, 0, 10) == default]
    assert sorted(same) == ["K=3", "N=16", "dmvr", "fac", "joint"]  # one run: every default arm
    keys = {abl.run_key(over, 0, 10) for arms in abl.ARMS.values() for over in arms.values()}
    assert len(keys) == 7
