"""The end-to-end demo at seconds-long sizes: data, training, evaluation and the report."""

import json

from mmv_torch.demo import QUICK, run_demo


def test_quick_demo_writes_report_and_plots(tmp_path):
    results = run_demo(tmp_path, QUICK, progress=False, say=lambda msg: None)
    for name in ("report.md", "results.json", "loss.png", "retrieval.png"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "results.json").read_text())
    for which in ("trained", "random_init"):
        t2v = saved[which]["retrieval"]["t2v"]
        assert t2v["queries"] == 2 * QUICK.num_retrieval and 1 <= t2v["median_rank"] <= QUICK.num_retrieval
        for task in ("motion", "sound"):
            assert 0.0 <= saved[which][task]["metrics"]["test_top1"] <= 1.0
    assert results["train"]["steps"] == QUICK.steps
    report = (tmp_path / "report.md").read_text()
    assert "text->video R@1" in report and "random init" in report
