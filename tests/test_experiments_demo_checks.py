"""experiments/demo_checks.py (the demo's checks in docs/demo.md) on a seconds-long demo."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "demo_checks.py"


@pytest.fixture(scope="module")
def checks():
    spec = importlib.util.spec_from_file_location("demo_checks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_checks_on_a_quick_demo(quick_demo_copy, checks, capsys):
    demo = quick_demo_copy  # the checks write their extra clips and runs into the demo folder

    res = checks.recheck(demo, num_test=8)
    assert set(res) == {"motion/trained", "motion/random_init", "sound/trained", "sound/random_init"}
    assert all(0.0 <= v <= 1.0 for v in res.values())
    assert sum(1 for _ in (demo / "recheck").glob("probe_test_*.mp4")) == 8
    stamp = (demo / "recheck" / "recheck.json").stat().st_mtime_ns
    checks.recheck(demo, num_test=8)  # the extra clips are written once
    assert (demo / "recheck" / "recheck.json").stat().st_mtime_ns == stamp

    shares = checks.text_variance(demo)
    assert all(0.0 <= v <= 1.0 for v in shares.values()) and len(shares) == 4

    assert checks.main(["supervised", "--demo", str(demo), "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "| 2 |" in out and "motion probe top-1" in out


def test_demo_checks_need_a_finished_demo(tmp_path, checks):
    with pytest.raises(SystemExit):
        checks.main(["recheck", "--demo", str(tmp_path)])
