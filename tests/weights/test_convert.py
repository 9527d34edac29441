"""Tests of mmv_torch.weights.convert: safe unpickling, the key table, parity with the official code.

Parity data: ``tests/assets/official_mmv/`` (official JAX/Haiku outputs with fill-rule weights; see
the README there and ``tests/helpers/official_reference.py``).
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import sys
import types
from collections.abc import Iterator, Mapping

import numpy as np
import pytest
import torch

from mmv_torch.models.mmv import MMV
from mmv_torch.weights.convert import (
    convert_checkpoint,
    infer_model_config,
    load_official,
    official_leaves,
    official_to_torch_key,
)
from mmv_torch.weights.resolve import create_model
from mmv_torch.weights.unpickle import UnsafePickleError, load_official_pickle, safe_load_pickle
from tests.helpers import official_reference as ref
from tests.helpers.official_layout import OUTPUT_KEYS, official_outputs, record_intermediates


def _tol(ref_arr: np.ndarray) -> float:
    """The parity tolerance of the issue: ``1e-4 * max|ref| + 1e-6``."""
    return 1e-4 * float(np.abs(ref_arr).max()) + 1e-6


# =============================================================================================
# Safe unpickling


@pytest.fixture
def fake_modules() -> Iterator[dict[str, types.ModuleType]]:
    """Fake ``haiku._src.data_structures``, ``dill._dill`` and ``jax._src.array`` modules that exist
    only while a test WRITES its pickle (``install()``); they are removed before loading."""
    names = ["haiku", "haiku._src", "haiku._src.data_structures", "dill", "dill._dill", "jax", "jax._src",
             "jax._src.array"]
    mods = {n: types.ModuleType(n) for n in names}
    ds = mods["haiku._src.data_structures"]

    class FlatMapping(Mapping):
        """Haiku 2020 FlatMapping: pickles as ``FlatMapping(dict)``."""

        def __init__(self, *args, **kwargs):
            self._d = dict(*args, **kwargs)

        def __getitem__(self, k):
            return self._d[k]

        def __iter__(self):
            return iter(self._d)

        def __len__(self):
            return len(self._d)

        def __reduce__(self):
            return FlatMapping, (self._d,)

    class frozendict(FlatMapping):  # noqa: N801 - haiku's name
        def __reduce__(self):
            return frozendict, (self._d,)

    for cls in (FlatMapping, frozendict):
        cls.__module__ = "haiku._src.data_structures"
        cls.__qualname__ = cls.__name__
        setattr(ds, cls.__name__, cls)

    def _create_array(f, args, state, npdict=None):
        raise AssertionError("never called: the fake dill module is gone when loading")

    _create_array.__module__, _create_array.__qualname__ = "dill._dill", "_create_array"
    mods["dill._dill"]._create_array = _create_array

    def _reconstruct_array(fun, args, arr_state, aval_state):
        raise AssertionError("never called")

    _reconstruct_array.__module__, _reconstruct_array.__qualname__ = "jax._src.array", "_reconstruct_array"
    mods["jax._src.array"]._reconstruct_array = _reconstruct_array
    installed: list[str] = []

    def install() -> None:
        for n, m in mods.items():
            assert n not in sys.modules or n in installed, f"real module {n} is importable here"
            sys.modules[n] = m
            installed.append(n)

    def remove() -> None:
        for n in installed:
            sys.modules.pop(n, None)
        installed.clear()

    ns = types.SimpleNamespace(FlatMapping=FlatMapping, frozendict=frozendict, create_array=_create_array,
                               reconstruct_array=_reconstruct_array, install=install, remove=remove)
    yield ns  # type: ignore[misc]
    remove()


class _DillLikePickler(pickle.Pickler):
    """Pickles ndarrays the way dill does (``dill._dill._create_array``), 0-d arrays the way a
    ``jax.Array`` pickles (``jax._src.array._reconstruct_array``)."""

    def __init__(self, f, protocol, create_array, reconstruct_array):
        super().__init__(f, protocol)
        self._create, self._reconstruct = create_array, reconstruct_array

    def reducer_override(self, obj):
        if type(obj) is np.ndarray:
            f, args, state = obj.__reduce__()
            if obj.ndim == 0:
                return self._reconstruct, (f, args, state, {"weak_type": False})
            return self._create, (f, args, state, None)
        return NotImplemented


def _sample_tree(ns) -> tuple[dict, dict]:
    """A haiku-like checkpoint with FlatMapping/frozendict containers and its plain expected value."""
    w = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    scale = np.linspace(0.5, 1.5, 5, dtype=np.float32).reshape(1, 1, 5)
    counter = np.array(3, np.int32)
    plain = {"params": {"net/~/conv": {"w": w}, "net/bn": {"scale": scale}},
             "state": {"net/bn/~/mean_ema": {"counter": counter, "average": scale * 0.0}}}
    obj = {"params": ns.FlatMapping({"net/~/conv": ns.FlatMapping({"w": w}),
                                     "net/bn": ns.frozendict({"scale": scale})}),
           "state": collections.OrderedDict({"net/bn/~/mean_ema": {"counter": counter,
                                                                   "average": scale * 0.0}})}
    return obj, plain


def _assert_tree_equal(got, want) -> None:
    assert type(got) is dict and set(got) == set(want)
    for k, v in want.items():
        if isinstance(v, dict):
            _assert_tree_equal(got[k], v)
        else:
            g = np.asarray(got[k])
            assert g.dtype == v.dtype and g.shape == v.shape and np.array_equal(g, v), k


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("style", ["numpy", "dill_jax"])
def test_haiku_pickle_loads_without_haiku(fake_modules, tmp_path, protocol, style) -> None:
    ns = fake_modules
    obj, plain = _sample_tree(ns)
    ns.install()
    buf = io.BytesIO()
    if style == "numpy":
        pickle.Pickler(buf, protocol).dump(obj)
    else:
        _DillLikePickler(buf, protocol, ns.create_array, ns.reconstruct_array).dump(obj)
    ns.remove()
    data = buf.getvalue()
    assert b"FlatMapping" in data and b"frozendict" in data
    if style == "dill_jax":
        assert b"_create_array" in data and b"_reconstruct_array" in data
    for mod in ("haiku", "dill", "jax"):
        assert mod not in sys.modules
    path = tmp_path / "ckpt.pkl"
    path.write_bytes(data)
    _assert_tree_equal(load_official_pickle(path), plain)
    params, state, _ = official_leaves(path)
    assert set(params) == {"net/~/conv/w", "net/bn/scale"}
    assert set(state) == {"net/bn/~/mean_ema/counter", "net/bn/~/mean_ema/average"}


def test_real_dill_haiku_jax_pickle() -> None:
    """A pickle written by real dill 0.4.1 + dm-haiku 0.0.12 + jax 0.4.30 (see data README)."""
    got = load_official_pickle(ref.DATA / "real_dill_haiku_jax.pkl")
    want = np.load(ref.DATA / "real_dill_haiku_jax_expected.npz")
    params, state, _ = official_leaves(got)
    flat = {**{f"params/{k}": v for k, v in params.items()}, **{f"state/{k}": v for k, v in state.items()}}
    assert set(flat) == set(want.files)
    for k in want.files:
        assert flat[k].dtype == want[k].dtype and np.array_equal(flat[k], want[k]), k


class _Evil:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "subprocess.Popen", "builtins.exec"])
def test_malicious_pickle_is_refused_without_running(tmp_path, name) -> None:
    marker = tmp_path / "pwned"
    cmd = f"touch {marker}"
    import builtins
    import subprocess

    fn, args = {
        "os.system": (os.system, (cmd,)),
        "builtins.eval": (builtins.eval, (f"open({str(marker)!r}, 'w').close()",)),
        "builtins.exec": (builtins.exec, (f"open({str(marker)!r}, 'w').close()",)),
        "subprocess.Popen": (subprocess.Popen, (["touch", str(marker)],)),
    }[name]
    # Hidden inside an otherwise valid checkpoint, after real arrays.
    obj = {"params": {"m": {"w": np.ones(3, np.float32)}}, "state": {"m": {"x": _Evil(fn, *args)}}}
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    with pytest.raises(UnsafePickleError) as e:
        load_official_pickle(path)
    shown = {"os.system": "posix.system", "builtins.eval": "builtins.eval", "builtins.exec": "builtins.exec",
             "subprocess.Popen": "subprocess.Popen"}[name]
    assert f"'{shown}'" in str(e.value) and str(path) in str(e.value)
    with pytest.raises(UnsafePickleError):
        load_official(path)
    assert not marker.exists()


def test_allowed_helper_cannot_call_arbitrary_constructor(fake_modules) -> None:
    """dill's ``_create_array`` stand-in only accepts numpy's array constructors."""
    ns = fake_modules
    ns.install()
    data = pickle.dumps(_Evil(ns.create_array, np.dtype, ("f4",), None), protocol=4)
    ns.remove()
    with pytest.raises(UnsafePickleError, match="not a numpy array constructor"):
        safe_load_pickle(data)


def test_object_arrays_are_refused() -> None:
    data = pickle.dumps({"params": {"m": {"w": np.array([1, "x"], dtype=object)}}, "state": {}})
    with pytest.raises(ValueError, match="not a numeric array"):
        official_leaves({"params": safe_load_pickle(data)["params"], "state": {}})


def test_truncated_pickle_gives_clear_error(tmp_path) -> None:
    obj = {"params": {"m": {"w": np.ones((4, 4), np.float32)}}, "state": {}}
    data = pickle.dumps(obj, protocol=4)
    for cut in (len(data) // 2, len(data) - 1, 3):
        path = tmp_path / f"cut{cut}.pkl"
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated or corrupt pickle") as e:
            load_official_pickle(path)
        assert str(path) in str(e.value)
    with pytest.raises(ValueError, match="does not exist"):
        load_official_pickle(tmp_path / "nope.pkl")


# =============================================================================================
# Parity with the official outputs (fill-rule weights)


@pytest.fixture(scope="module")
def loaded() -> Iterator[dict[str, MMV]]:
    """Models built from the fill-rule mappings, one per config, created on demand."""
    cache: dict[str, MMV] = {}

    class Lazy(dict):
        def __missing__(self, config):
            cache[config] = load_official(ref.official_mapping(config))
            self[config] = cache[config]
            return cache[config]

    yield Lazy()  # type: ignore[misc]
    cache.clear()


@pytest.mark.parametrize("config", ref.CONFIGS)
def test_parity_outputs_and_intermediates(loaded, config) -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = loaded[config]
    inp, want, inter = (ref.load_npz(config, n) for n in ("inputs", "outputs", "intermediates"))
    with record_intermediates(model) as rec:
        got = official_outputs(model, inp["video"], inp["audio_spectrogram"], inp["word_ids"])
    assert set(got) == set(OUTPUT_KEYS)
    errors = {}
    for k in OUTPUT_KEYS:
        r = want[f"{k}__f64"]
        assert got[k].shape == r.shape and got[k].dtype == np.float32, k
        err = np.abs(got[k] - r).max()
        errors[k] = err / np.abs(r).max()
        assert err <= _tol(r), (k, err, _tol(r))
    print(f"\n{config} max |err| / max |ref| vs __f64: " + ", ".join(f"{k} {e:.2e}" for k, e in errors.items()))
    recorded = {k.split("::")[0] for k in inter}
    assert set(rec) == recorded
    for name, x in rec.items():
        red = ref.reduce_intermediate(x)
        assert tuple(inter[f"{name}::shape"]) == x.shape, name
        for s in ("mean", "slice0"):
            r = inter[f"{name}::{s}"]
            assert red[s].shape == r.shape, (name, s)
            assert np.abs(red[s] - r).max() <= _tol(r), (name, s, np.abs(red[s] - r).max())


EXTRA_CASES = sorted(p.stem for p in (ref.DATA / "extra").glob("*.npz"))
# Parameter counts of the official models (docs/official_checkpoints.md): video, audio, text, heads, total.
PARAM_COUNTS = {
    "s3d": (9_146_000, 23_494_080, 20_277_248, 4_592_640, 57_509_968),
    "tsm_resnet_x1": (23_500_352, 23_494_080, 20_277_248, 5_116_928, 72_388_608),
    "tsm_resnet_x2": (93_891_712, 23_494_080, 20_277_248, 6_165_504, 143_828_544),
}


@pytest.mark.parametrize("case", EXTRA_CASES)
def test_parity_other_sizes_and_width2(loaded, case) -> None:
    """Official-code outputs for B=1/3, odd and non-square frames, odd spectrograms, other frame and
    word counts, and the width-2 TSM (``tests/assets/official_mmv/extra``, see the README there)."""
    assert len(EXTRA_CASES) == 5
    torch.set_num_threads(min(2, torch.get_num_threads()))
    with np.load(ref.DATA / "extra" / f"{case}.npz") as z:
        data = {k: z[k] for k in z.files}
    config = str(data["config"])
    model = loaded[config]
    counts = model.parameter_counts()
    assert tuple(counts[k] for k in ("video", "audio", "text", "heads", "total")) == PARAM_COUNTS[config]
    got = official_outputs(model, data["input.video"], data["input.audio_spectrogram"], data["input.word_ids"])
    for k in OUTPUT_KEYS:
        r = data[f"{k}__f64"]
        assert got[k].shape == r.shape, k
        assert np.abs(got[k] - r).max() <= _tol(r), (case, k, np.abs(got[k] - r).max() / np.abs(r).max())


@pytest.mark.parametrize("case", ["s3d_b1_odd", "tsm_resnet_x1_b1_odd"])
def test_float64_port_matches_official_float64(loaded, case) -> None:
    """In float64 the port agrees with the official float64 run to rounding (far below the float32
    tolerance), so a float32 match is not luck within a loose bound."""
    with np.load(ref.DATA / "extra" / f"{case}.npz") as z:
        data = {k: z[k] for k in z.files}
    model = loaded[str(data["config"])]
    model.double()  # the float32 weights are exact in float64; .float() below restores them bit for bit
    try:
        got = official_outputs(model, data["input.video"], data["input.audio_spectrogram"],
                               data["input.word_ids"])
    finally:
        model.float()
    for k in OUTPUT_KEYS:
        r = data[f"{k}__f64"]
        assert got[k].dtype == np.float64
        assert np.abs(got[k] - r).max() <= 1e-9 * np.abs(r).max() + 1e-12, (k, np.abs(got[k] - r).max())


def test_intermediate_check_catches_layout_mistakes(loaded) -> None:
    """Negative control: a kernel loaded with H and W swapped (a plausible transpose bug) is caught
    by the recorded stem intermediate, while the correct kernel passes."""
    model = loaded["tsm_resnet_x1"]
    inp, inter = ref.load_npz("tsm_resnet_x1", "inputs"), ref.load_npz("tsm_resnet_x1", "intermediates")
    v = torch.from_numpy(inp["video"])  # [B,T,H,W,3]
    frames = v.reshape(-1, *v.shape[2:]).permute(0, 3, 1, 2)
    key = "visual_module/~/TSMResNetV2/tsm_resnet_stem::slice0"
    stem = model.video.stem
    with torch.no_grad():
        good = stem(frames).permute(0, 2, 3, 1)[0, ..., :8].numpy()
        saved = stem.weight.detach().clone()
        stem.weight.copy_(saved.transpose(2, 3))
        try:
            bad = stem(frames).permute(0, 2, 3, 1)[0, ..., :8].numpy()
        finally:
            stem.weight.copy_(saved)
    r = inter[key]
    assert np.abs(good - r).max() <= _tol(r)
    assert np.abs(bad - r).max() > 100 * _tol(r)


def test_leaf_counts_and_every_key_used_once(loaded) -> None:
    counts = {"s3d": (475, 768), "tsm_resnet_x1": (324, 606), "tsm_resnet_x2": (324, 606)}
    for config, (n_params, n_state) in counts.items():
        p, s = ref.key_shapes(config)
        assert (len(p), len(s)) == (n_params, n_state)
    model = loaded["s3d"]
    p, s = ref.key_shapes("s3d")
    targets = [official_to_torch_key(k, model) for k in [*p, *s]]
    stored = [t for t in targets if t is not None]
    assert len(stored) == len(set(stored))  # one source per model tensor
    assert set(stored) == set(model.state_dict())
    assert "heads.audio_at.final_projection.weight" in stored  # audio2txt_embd is carried
    # Dropped leaves are exactly the training-only EMA ``hidden`` and the duplicate var counter.
    dropped = {k.split("/~/")[-1] for k, t in zip([*p, *s], targets) if t is None}
    assert dropped == {"mean_ema/hidden", "var_ema/hidden", "var_ema/counter"}


def test_bad_keys_raise_one_error_listing_all() -> None:
    m = ref.official_mapping("tsm_resnet_x1", zeros=True)
    p = m["params"]
    head = "text_audio_video/~_get_pair_embedding_heads/"
    del p[head + "txt_embd/final_projection/b"]
    p[head + "txt_embd/final_projection/extra"] = np.zeros(3, np.float32)
    key = "text_audio_video/audio_module/~/res_net_v2/~/block_group_1/block_0/~/conv_1/w"
    p[key] = p[key][:, :, :, :64].copy()
    m["state"]["text_audio_video/visual_module/~/TSMResNetV2/bogus/~/mean_ema/average"] = np.zeros(4, np.float32)
    with pytest.raises(ValueError) as e:
        load_official(m)
    msg = str(e.value)
    assert "heads.text_vt.final_projection.bias" in msg  # missing
    assert "txt_embd/final_projection/extra" in msg and "TSMResNetV2/bogus" in msg  # unknown
    assert f"{key}: shape [3, 3, 128, 64]" in msg  # mis-shaped


def test_two_level_mapping_and_architecture_inference() -> None:
    for config, (backbone, width, depth) in {"s3d": ("s3d", 1.0, 50), "tsm_resnet_x1": ("tsm_resnet", 1.0, 50),
                                             "tsm_resnet_x2": ("tsm_resnet", 2.0, 50)}.items():
        p, _ = ref.key_shapes(config)
        fake = {k: np.zeros(s, np.float32) for k, s in p.items()}  # shapes only matter
        cfg = infer_model_config(fake)
        assert (cfg.video.backbone, cfg.video.width_mult) == (backbone, width)
        if backbone == "s3d":
            assert cfg.video.s3d_stem == "space_to_depth" and cfg.video.s3d_gating
        else:
            assert cfg.video.depth == depth
        assert cfg.graph == "fac" and cfg.fac_activation == "relu" and cfg.bn.eps == 1e-5
        assert (cfg.text.vocab_size, cfg.text.word_dim, cfg.text.hidden_dim) == (65536, 300, 2048)
        sp = cfg.spaces
        assert (sp["va"].dim, sp["vt"].dim, sp["at"].dim) == (512, 256, 512)
        assert sp["va"].first.hidden == (512,) and sp["va"].first.inner_bn and sp["va"].first.bn_after_proj
        assert sp["vt"].first.hidden == () and sp["vt"].first.bn_after_proj
        assert not any(h.bn_after_proj or h.hidden for h in (sp["va"].second, sp["vt"].second, sp["at"].first,
                                                             sp["at"].second))
    flat = ref.official_mapping("tsm_resnet_x1", zeros=True)
    nested = ref.official_mapping("tsm_resnet_x1", two_level=True, zeros=True)
    a, b = official_leaves(flat), official_leaves(nested)
    assert a[0].keys() == b[0].keys() and a[1].keys() == b[1].keys()
    with pytest.raises(ValueError, match="no S3D or TSMResNetV2"):
        infer_model_config({"text_audio_video/visual_module/~/Other/w": np.zeros(1)})


def test_official_outputs_input_checks(loaded) -> None:
    model = loaded["s3d"]
    inp = ref.load_npz("s3d", "inputs")
    with pytest.raises(ValueError, match="space-to-depth"):
        official_outputs(model, inp["video_raw"], inp["audio_spectrogram"], inp["word_ids"])
    with pytest.raises(ValueError, match=r"\[B,T',F,1\]"):
        official_outputs(model, inp["video"], inp["audio_spectrogram"][..., 0], inp["word_ids"])
    model.train()
    try:
        with pytest.raises(ValueError, match="eval mode"):
            official_outputs(model, inp["video"], inp["audio_spectrogram"], inp["word_ids"])
    finally:
        model.eval()


# =============================================================================================
# Conversion to safetensors


def test_convert_pickle_to_safetensors_and_reload_bit_identical(loaded, fake_modules, tmp_path) -> None:
    config = "s3d"
    mapping = ref.official_mapping(config, two_level=True)
    ns = fake_modules
    ns.install()
    obj = {"params": ns.FlatMapping({k: ns.FlatMapping(v) for k, v in mapping["params"].items()}),
           "state": ns.FlatMapping({k: ns.FlatMapping(v) for k, v in mapping["state"].items()})}
    pkl = tmp_path / "mmv_renamed.pkl"  # the backbone comes from keys and shapes, not the file name
    with open(pkl, "wb") as f:
        _DillLikePickler(f, 4, ns.create_array, ns.reconstruct_array).dump(obj)
    ns.remove()
    del obj, mapping
    out = convert_checkpoint(pkl, tmp_path / "converted")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    reloaded = create_model(checkpoint=out)
    assert not reloaded.training
    assert reloaded.cfg == loaded[config].cfg
    inp = ref.load_npz(config, "inputs")
    args = (inp["video"], inp["audio_spectrogram"], inp["word_ids"])
    a, b = official_outputs(loaded[config], *args), official_outputs(reloaded, *args)
    for k in OUTPUT_KEYS:
        assert np.array_equal(a[k], b[k]), k
    sd_a, sd_b = loaded[config].state_dict(), reloaded.state_dict()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    # Converting again into the same folder replaces it whole: a stale vocab.txt does not survive.
    (out / "vocab.txt").write_text("old\nwords\n")
    assert sorted(p.name for p in convert_checkpoint(pkl, out).iterdir()) == ["config.json", "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".converted", "converted.old"))]
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds files that are not a weights folder"):
        convert_checkpoint(pkl, out)
    assert (out / "notes.txt").read_text() == "mine"


def test_converted_config_records_the_official_input_contract(loaded, fake_modules, tmp_path) -> None:
    from mmv_torch.config import load_config
    from mmv_torch.weights.convert import OFFICIAL_INPUTS

    mapping = ref.official_mapping("s3d", two_level=True)
    out = convert_checkpoint(mapping, tmp_path / "converted")
    data = load_config(out / "config.json").data
    assert (data.sample_rate, data.audio_frontend, data.audio_seconds, data.tokenizer) == (48000, "dmvr", 3.2, "dmvr")
    assert (data.num_frames, data.fps, data.eval_crop_size) == (32, 12.5, 224)
    assert all(getattr(data, k.split(".")[1]) == v for k, v in OFFICIAL_INPUTS.items())
