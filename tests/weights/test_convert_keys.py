"""The official -> torch key table of mmv_torch.weights.convert against recorded expectations.

``tests/assets/official_key_map.json`` holds ``official_to_torch_key`` for every key of the reference
parameters (``tests/assets/official_mmv/<config>/params.json``, params and state), recorded from the
regex-chain mapping that the key table replaced: ``{config: {key without 'text_audio_video/':
torch key or null}}``. The width-2 TSM has the key names of the width-1 one (only shapes differ), so
it is checked against the ``tsm_resnet_x1`` entries. Re-record (only when the mapping is meant to
change) with ``python -m tests.weights.test_convert_keys`` (from the repository root).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from mmv_torch.models.mmv import MMV
from mmv_torch.weights.convert import ROOT, infer_model_config, official_to_torch_key
from tests.helpers import ASSETS
from tests.helpers import official_reference as ref

EXPECTED_PATH = ASSETS / "official_key_map.json"
RECORDED_CONFIGS = ("s3d", "tsm_resnet_x1")


def _meta_model(config: str) -> MMV:
    """The model inferred from ``config``'s reference keys, on the meta device (no weights needed)."""
    params, _ = ref.key_shapes(config)
    cfg = infer_model_config({k: np.zeros(s, np.float32) for k, s in params.items()})
    with torch.device("meta"):
        return MMV(cfg)


def _all_keys(config: str) -> list[str]:
    params, state = ref.key_shapes(config)
    return [*params, *state]


def _mapping(config: str) -> dict[str, str | None]:
    model = _meta_model(config)
    out = {}
    for key in _all_keys(config):
        assert key.startswith(ROOT), key
        out[key[len(ROOT):]] = official_to_torch_key(key, model)
    return out


@pytest.fixture(scope="module")
def expected() -> dict[str, dict[str, str | None]]:
    return json.loads(EXPECTED_PATH.read_text())


@pytest.mark.parametrize("config", ["s3d", "tsm_resnet_x1", "tsm_resnet_x2"])
def test_key_table_reproduces_recorded_mapping(expected, config) -> None:
    want = expected["tsm_resnet_x1" if config == "tsm_resnet_x2" else config]
    got = _mapping(config)
    assert set(got) == set(want)
    wrong = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert wrong == {}
    model_keys = set(_meta_model(config).state_dict())
    assert {t for t in got.values() if t is not None} == model_keys


def _near_misses(key: str) -> list[str]:
    """Keys one edit away from an official key that name nothing in the model."""
    module, leaf = key.rsplit("/", 1)
    out = [f"{module}/extra", key.replace(ROOT, "text_video/", 1), key.replace("/~/", "/", 1)]
    if "__cross_replica_batch_norm" in key:
        out.append(re.sub(r"__cross_replica_batch_norm(_\d+)?/", "__cross_replica_batch_norm_7/", key))
    return out


@pytest.mark.parametrize("config", RECORDED_CONFIGS)
def test_keys_outside_the_table_are_refused(config) -> None:
    """A key that names no tensor of the model is a ``KeyError``, never a target or a silent drop."""
    model = _meta_model(config)
    own = set(model.state_dict())
    leaked = {}
    for key in _all_keys(config):
        for alt in _near_misses(key):
            try:
                target = official_to_torch_key(alt, model)
            except KeyError:
                continue
            if target is None or target not in own:
                leaked[alt] = target
    assert leaked == {}


def _record() -> None:
    from mmv_torch.fileio import atomic_write_text

    table = {config: _mapping(config) for config in RECORDED_CONFIGS}
    atomic_write_text(EXPECTED_PATH, json.dumps(table, indent=0, sort_keys=True) + "\n")
    print(f"wrote {EXPECTED_PATH}: {sum(map(len, table.values()))} keys")


if __name__ == "__main__":
    _record()
