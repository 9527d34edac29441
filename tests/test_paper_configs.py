"""The paper's pretraining configs (configs/paper/*.json): each is its preset plus the values that
docs/reproduce.md lists, and still loads with the current schema."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mmv_torch.config import apply_overrides, config_to_dict, get_preset, load_config

ROOT = Path(__file__).resolve().parents[1]


def documented_overrides() -> list[str]:
    """The ``key=value`` cells of docs/reproduce.md's table of pretraining values."""
    text = (ROOT / "docs/reproduce.md").read_text()
    section = text[text.index("Pretraining (the paper's runs)"):text.index("## Gaps")]
    return re.findall(r"^\| `([a-z_]+\.[a-z_]+=[^`]+)` \|", section, flags=re.M)


def test_the_table_of_pretraining_values_is_found():
    keys = [o.split("=")[0] for o in documented_overrides()]
    assert {"train.lr", "loss.temperature", "data.num_frames", "train.steps"} <= set(keys)
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("preset", ["mmv_s3d", "mmv_tsm_r50", "mmv_tsm_r50x2"])
def test_paper_config_is_the_preset_with_the_documented_values(preset):
    cfg = load_config(ROOT / "configs/paper" / f"{preset}.json")
    assert config_to_dict(cfg) == config_to_dict(apply_overrides(get_preset(preset), documented_overrides()))
