"""mmv_torch.config: the presets, their validation, ``key=value`` overrides and the JSON round trip."""

import dataclasses
import json

import pytest

from mmv_torch.config import (
    PRESETS,
    AudioConfig,
    BatchNormConfig,
    Config,
    DataConfig,
    HeadConfig,
    LossConfig,
    ModelConfig,
    SpaceConfig,
    TextConfig,
    TrainConfig,
    VideoConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    get_preset,
    load_config,
    save_config,
)


@pytest.fixture
def tiny():
    return get_preset("tiny")


# ---------------------------------------------------------------------------------------------
# Presets and validation


def test_presets_are_valid_configs_with_their_backbones():
    assert sorted(PRESETS) == ["mmv_s3d", "mmv_tsm_r50", "mmv_tsm_r50x2", "tiny", "va_r2plus1d_18"]
    backbones = {name: (cfg.model.video.backbone, cfg.model.video.width_mult) for name, cfg in PRESETS.items()}
    assert backbones == {"mmv_s3d": ("s3d", 1.0), "mmv_tsm_r50": ("tsm_resnet", 1.0),
                         "mmv_tsm_r50x2": ("tsm_resnet", 2.0), "va_r2plus1d_18": ("r2plus1d", 1.0),
                         "tiny": ("s3d", 0.25)}
    for name, cfg in PRESETS.items():
        assert isinstance(cfg, Config) and get_preset(name) is cfg
        # every section passes its own validation again when rebuilt from its fields
        for section in (cfg.model.video, cfg.model.audio, cfg.model.text, cfg.model.bn, cfg.loss, cfg.data,
                        cfg.train, *cfg.model.spaces.values()):
            assert dataclasses.replace(section) == section
    assert get_preset("va_r2plus1d_18").loss.weight_vt == 0.0 and get_preset("va_r2plus1d_18").model.graph == "disjoint"
    assert get_preset("mmv_s3d").model.spaces["vt"].dim == 256  # the official spaces: va 512, vt 256, at 512


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown preset 'mmv_s4d'; valid presets: \['mmv_s3d'"):
        get_preset("mmv_s4d")


@pytest.mark.parametrize("make, message", [
    (lambda: VideoConfig(backbone="i3d"), r"video.backbone='i3d' is not one of \['s3d'"),
    (lambda: VideoConfig(s3d_stem="deep"), "video.s3d_stem='deep'"),
    (lambda: VideoConfig(width_mult=0.0), "video.width_mult must be > 0"),
    (lambda: VideoConfig(shift_fraction=0.6), r"video.shift_fraction must be in \[0, 0.5\]"),
    (lambda: VideoConfig(backbone="tsm_resnet", depth=20), "not a TSM-ResNet depth"),
    (lambda: VideoConfig(backbone="r2plus1d", depth=50), r"not an R\(2\+1\)D depth"),
    (lambda: AudioConfig(depth=19), "audio.depth=19"),
    (lambda: TextConfig(hidden_dim=0), "text.hidden_dim must be > 0"),
    (lambda: TextConfig(vocab_size=10, padding_id=10), r"text.padding_id=10 outside \[0, 10\)"),
    (lambda: HeadConfig(hidden=(64, 0)), "head.hidden must be > 0"),
    (lambda: SpaceConfig(dim=-1), "space.dim must be > 0"),
    (lambda: BatchNormConfig(momentum=1.5), r"bn.momentum must be in \[0, 1\]"),
    (lambda: BatchNormConfig(eps=0.0), "bn.eps must be > 0"),
    (lambda: ModelConfig(graph="star"), "model.graph='star'"),
    (lambda: ModelConfig(fac_activation="gelu"), "model.fac_activation='gelu'"),
    (lambda: ModelConfig(spaces={"va": SpaceConfig(8), "vt": SpaceConfig(8)}), r"missing \['at'\]"),
    (lambda: ModelConfig(graph="shared"), "graph 'shared' needs one dim for every space"),
    (lambda: ModelConfig(graph="shared", spaces={s: SpaceConfig(8, HeadConfig(hidden=(8,)) if s == "va" else
                                                                 HeadConfig()) for s in ("va", "vt", "at")}),
     "same video head for"),
    (lambda: LossConfig(temperature=0.0), "loss.temperature must be > 0"),
    (lambda: LossConfig(weight_at=-0.5), "loss.weight_at must be >= 0"),
    (lambda: DataConfig(scale_jitter=(1.2, 0.8)), "data.scale_jitter must be"),
    (lambda: DataConfig(max_skip_rate=1.5), r"data.max_skip_rate must be in \[0, 1\]"),
    (lambda: DataConfig(num_frames=0), "data.num_frames must be > 0"),
    (lambda: DataConfig(color_jitter=-0.1), "data.color_jitter must be >= 0"),
    (lambda: TrainConfig(precision="fp8"), "train.precision='fp8'"),
    (lambda: TrainConfig(grad_accum=0), "train.grad_accum must be > 0"),
    (lambda: TrainConfig(num_workers=-1), "train.num_workers must be >= 0"),
])
def test_sections_reject_bad_values(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_shared_graph_with_one_dim_and_one_video_head_is_valid():
    spaces = {s: SpaceConfig(16) for s in ("va", "vt", "at")}
    assert ModelConfig(graph="shared", spaces=spaces).graph == "shared"


# ---------------------------------------------------------------------------------------------
# Overrides


def test_overrides_of_every_value_type(tiny):
    cfg = apply_overrides(tiny, [
        "train.steps=7",  # int
        "train.lr=1e-3",  # float
        "loss.temperature=1",  # an integer for a float field
        "data.fps = 12.5",  # spaces around the = are ignored
        "model.graph=disjoint",  # a bare string
        'model.fac_activation="bnrelu"',  # a JSON string
        "data.scale_jitter=0.9,1.1",  # a tuple as comma-separated text
        "model.spaces.va.first.hidden=[32, 16]",  # a tuple as a JSON list, nested through the spaces mapping
        "model.spaces.vt.first.hidden=(8,)",  # ... in parentheses
        "model.spaces.at.second.hidden=[]",  # an empty tuple
        "train.compile=true",
        "train.channels_last=False",
        "data.flip=no",
        "loss.normalize=0",
        "loss.symmetric=1",
        "model.text.mask_padding=YES",
        "train.ckpt_every=2e2",  # an integral float for an int field
    ])
    assert (cfg.train.steps, cfg.train.lr, cfg.loss.temperature, cfg.data.fps) == (7, 1e-3, 1.0, 12.5)
    assert isinstance(cfg.loss.temperature, float) and isinstance(cfg.train.ckpt_every, int)
    assert (cfg.model.graph, cfg.model.fac_activation, cfg.data.scale_jitter) == ("disjoint", "bnrelu", (0.9, 1.1))
    assert cfg.model.spaces["va"].first.hidden == (32, 16) and cfg.model.spaces["vt"].first.hidden == (8,)
    assert cfg.model.spaces["at"].second.hidden == ()
    assert (cfg.train.compile, cfg.train.channels_last, cfg.data.flip) == (True, False, False)
    assert (cfg.loss.normalize, cfg.loss.symmetric, cfg.model.text.mask_padding) == (False, True, True)
    assert cfg.train.ckpt_every == 200
    # everything else is the preset's
    assert dataclasses.replace(cfg, train=tiny.train, loss=tiny.loss, data=tiny.data, model=tiny.model) == tiny
    assert cfg.model.video == tiny.model.video and cfg.train.batch_size == tiny.train.batch_size
    assert tiny.train.steps == 300  # the preset itself is unchanged


def test_dict_overrides_take_python_values(tiny):
    head = HeadConfig(hidden=(4,))
    cfg = apply_overrides(tiny, {"train.steps": 9, "data.flip": False, "data.scale_jitter": [0.5, 1.0],
                                 "model.spaces.va.second": head, "train.precision": "bf16", "train.lr": "0.5"})
    assert (cfg.train.steps, cfg.data.flip, cfg.data.scale_jitter) == (9, False, (0.5, 1.0))
    assert cfg.model.spaces["va"].second == head and (cfg.train.precision, cfg.train.lr) == ("bf16", 0.5)
    assert apply_overrides(tiny, {}) == tiny and apply_overrides(tiny, []) == tiny


def test_overrides_apply_in_order_and_to_a_section_config(tiny):
    assert apply_overrides(tiny, ["train.steps=1", "train.steps=2"]).train.steps == 2
    train = apply_overrides(tiny.train, ["steps=3", "lr=0.1"])
    assert isinstance(train, TrainConfig) and (train.steps, train.lr) == (3, 0.1)
    assert apply_overrides(tiny, "train.steps=4").train.steps == 4  # one override as a plain string


def test_a_mapping_for_a_section_sets_its_keys_and_keeps_the_others(tiny):
    # tiny's video tower is an S3D at width 0.25 with the standard stem: a mapping changes only its keys
    for over in ({"model.video": {"backbone": "tsm_resnet", "depth": 18}},
                 ['model.video={"backbone": "tsm_resnet", "depth": 18}']):
        video = apply_overrides(tiny, over).model.video
        assert video == dataclasses.replace(tiny.model.video, backbone="tsm_resnet", depth=18)
    spaces = apply_overrides(tiny, ['model.spaces={"va": {"dim": 16}}']).model.spaces
    assert spaces["va"] == dataclasses.replace(tiny.model.spaces["va"], dim=16)
    assert spaces["vt"] == tiny.model.spaces["vt"]
    # a whole section object replaces the section
    assert apply_overrides(tiny, {"model.video": VideoConfig()}).model.video == VideoConfig()
    with pytest.raises(ValueError, match=r"model.video: expected a mapping of its keys, got 5"):
        apply_overrides(tiny, ["model.video=5"])
    with pytest.raises(ValueError, match=r"unknown config key 'model.video.depht' \(did you mean 'model.video.depth'"):
        apply_overrides(tiny, {"model.video": {"depht": 18}})


def test_a_string_field_takes_the_text_as_written(tiny):
    assert apply_overrides(tiny, ["data.word_vectors=2024"]).data.word_vectors == "2024"
    assert apply_overrides(tiny, ["data.word_vectors=true"]).data.word_vectors == "true"
    assert apply_overrides(tiny, ['data.word_vectors="my vectors.txt"']).data.word_vectors == "my vectors.txt"
    assert apply_overrides(tiny, ["data.word_vectors=/a/b=c.bin"]).data.word_vectors == "/a/b=c.bin"
    with pytest.raises(ValueError, match="data.word_vectors: expected a string, got 2024"):
        apply_overrides(tiny, {"data.word_vectors": 2024})  # a Python value is not text


def test_unknown_keys_suggest_the_closest_name(tiny):
    with pytest.raises(ValueError, match=r"unknown config key 'data.colour_jitter' \(did you mean 'data.color_jitter'"
                                         r"\?\); valid keys here: \['audio_frontend', 'audio_seconds'"):
        apply_overrides(tiny, ["data.colour_jitter=0.1"])
    with pytest.raises(ValueError, match=r"unknown config key 'trian' \(did you mean 'train'\?\)"):
        apply_overrides(tiny, ["trian.lr=0.1"])
    with pytest.raises(ValueError, match=r"unknown config key 'model.spaces.vaa' \(did you mean 'model.spaces.va'"):
        apply_overrides(tiny, {"model.spaces.vaa.dim": 8})
    with pytest.raises(ValueError, match=r"unknown config key 'train.zzz'; valid keys here: \['batch_size'"):
        apply_overrides(tiny, ["train.zzz=1"])
    with pytest.raises(ValueError, match=r"unknown config key 'train.lr.warmup': 'train.lr' is a value, not a section"):
        apply_overrides(tiny, ["train.lr.warmup=1"])
    with pytest.raises(ValueError, match="override 'train.lr' is not of the form key=value"):
        apply_overrides(tiny, ["train.lr"])


@pytest.mark.parametrize("override, message", [
    ("train.steps=1.5", r"train.steps: expected an integer, got 1.5"),
    ("train.steps=ten", r"train.steps: expected an integer, got 'ten'"),
    ("train.steps=true", r"train.steps: expected an integer, got True"),
    ("train.steps=null", r"train.steps: expected an integer, got None"),
    ("train.lr=fast", r"train.lr: expected a finite number, got 'fast'"),
    ("train.lr=false", r"train.lr: expected a finite number, got False"),
    ("train.lr=nan", r"train.lr: expected a finite number, got 'nan'"),
    ("loss.weight_va=NaN", r"loss.weight_va: expected a finite number, got nan"),
    ("train.grad_clip=inf", r"train.grad_clip: expected a finite number, got 'inf'"),
    ("train.weight_decay=-Infinity", r"train.weight_decay: expected a finite number, got -inf"),
    ("data.flip=2", r"data.flip: expected true/false, got 2"),
    ("data.flip=maybe", r"data.flip: expected true/false, got 'maybe'"),
    ("data.flip=null", r"data.flip: expected true/false, got None"),
    ("model.graph=1", r"model.graph='1' is not one of \['shared'"),
    ("data.scale_jitter=[1.0]", r"data.scale_jitter: expected 2 values, got 1"),
    ("data.scale_jitter=0.5", r"data.scale_jitter: expected a list, got 0.5"),
    ("data.scale_jitter=[1.0, x]", r"data.scale_jitter: expected a finite number, got '\[1.0'"),
    ("model.spaces.va.first.hidden=[8, 0]", "head.hidden must be > 0"),
    ("model.spaces.va.first.hidden=[8.5]", r"model.spaces.va.first.hidden: expected an integer, got 8.5"),
    ("train.steps=0", r"train.steps must be > 0, got 0"),
    ("data.color_jitter=-1", r"data.color_jitter must be >= 0"),
    ("model.video.backbone=r2plus1d", r"video.depth=50 is not an R\(2\+1\)D depth"),
    ("model.graph=shared", "graph 'shared' needs one dim for every space"),
])
def test_bad_override_values_name_the_key(tiny, override, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(tiny, [override])


def test_an_override_that_only_fails_with_another_is_checked_after_all_are_applied(tiny):
    # r2plus1d does not take tiny's depth 50: the backbone alone fails (above), with the depth it is valid
    cfg = apply_overrides(tiny, ["model.video.backbone=r2plus1d", "model.video.depth=18"])
    assert (cfg.model.video.backbone, cfg.model.video.depth) == ("r2plus1d", 18)
    cfg = apply_overrides(tiny, ["model.graph=shared", "model.spaces.va.dim=32", "model.spaces.at.dim=32",
                                 "model.spaces.va.first.hidden=[]"])
    assert cfg.model.graph == "shared"


# ---------------------------------------------------------------------------------------------
# JSON round trip


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_json(name, tmp_path):
    cfg = get_preset(name)
    d = config_to_dict(cfg)
    assert json.loads(json.dumps(d)) == d  # plain JSON types: tuples became lists
    assert d["data"]["scale_jitter"] == list(cfg.data.scale_jitter)
    back = config_from_dict(d)
    assert back == cfg and back.data.scale_jitter == cfg.data.scale_jitter and isinstance(back.model.spaces["va"],
                                                                                          SpaceConfig)
    save_config(cfg, tmp_path / "c.json")
    assert load_config(tmp_path / "c.json") == cfg
    assert json.loads((tmp_path / "c.json").read_text()) == d
    assert list(tmp_path.iterdir()) == [tmp_path / "c.json"]  # no temporary file left behind


def test_round_trip_keeps_overridden_values(tiny, tmp_path):
    cfg = apply_overrides(tiny, ["model.spaces.va.first.hidden=[7, 5]", "data.scale_jitter=0.6,0.9",
                                 "train.precision=bf16", "data.flip=false", "loss.weight_at=0.25"])
    save_config(cfg, tmp_path / "c.json")
    assert load_config(str(tmp_path / "c.json")) == cfg


def test_config_from_dict_of_sections_and_older_files():
    train = config_from_dict({"steps": 4}, TrainConfig)
    assert train == TrainConfig(steps=4)
    # keys missing from an older file take their defaults
    assert config_from_dict({"train": {"steps": 4}}) == Config(train=TrainConfig(steps=4))
    assert config_from_dict({}) == Config()


@pytest.mark.parametrize("data, message", [
    ({"trian": {}}, r"config: unknown keys \['trian'\] \(did you mean 'train'\?\); valid keys: \['model'"),
    ({"train": {"stpes": 1}}, r"train: unknown keys \['stpes'\] \(did you mean 'steps'\?\)"),
    ({"train": 5}, r"train: expected a mapping for TrainConfig, got int"),
    ({"train": {"lr": "x"}}, r"train.lr: expected a finite number, got 'x'"),
    ({"model": {"spaces": {"va": {}, "vt": {"dim": 8}, "at": {"dim": 8}}}}, r"model.spaces.va: missing keys \['dim'\]"),
    ({"model": {"spaces": []}}, r"model.spaces: expected a mapping, got list"),
    (None, r"config: expected a mapping, got NoneType"),
    ([1, 2], r"config: expected a mapping, got list"),
    ("train", r"config: expected a mapping, got str"),
])
def test_config_from_dict_rejects_bad_data_with_a_value_error(data, message):
    with pytest.raises(ValueError, match=message):
        config_from_dict(data)


@pytest.mark.parametrize("content, message", [
    (None, r"cannot read config .*c.json: \[Errno 2\]"),
    (b"", r"cannot read config .*c.json: Expecting value"),
    (b'{"train": {"steps": 3}', r"cannot read config .*c.json: Expecting ',' delimiter"),
    (b"\xff\xfe{}", r"cannot read config .*c.json: 'utf-8' codec can't decode"),
    (b"null", r"invalid config .*c.json: config: expected a mapping, got NoneType"),
    (b"[]", r"invalid config .*c.json: config: expected a mapping, got list"),
    (b'{"train": {"lr": -1}}', r"invalid config .*c.json: train.lr must be > 0"),
    (b'{"model": {"grpah": "fac"}}', r"invalid config .*c.json: model: unknown keys \['grpah'\]"),
])
def test_load_config_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "c.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_config(path)


def test_load_config_on_a_folder(tmp_path):
    with pytest.raises(ValueError, match=r"cannot read config .*: \[Errno 21\]"):
        load_config(tmp_path)


@pytest.mark.parametrize("preset", ["mmv_s3d", "mmv_tsm_r50", "tiny"])
def test_shared_graph_error_names_the_overrides_that_work(preset):
    import shlex

    from mmv_torch.config import get_preset
    from mmv_torch.models.mmv import MMV

    cfg = get_preset(preset)
    with pytest.raises(ValueError, match="with this config add: --set ") as e:
        apply_overrides(cfg, ["model.graph=shared"])
    fixes = shlex.split(str(e.value).split("--set ", 1)[1])
    shared = apply_overrides(cfg, ["model.graph=shared", *fixes])
    assert shared.model.graph == "shared" and len({s.dim for s in shared.model.spaces.values()}) == 1
    import torch

    with torch.device("meta"):
        MMV(shared.model)
