"""Configuration: frozen dataclasses per concern, the presets, overrides and JSON round-trip.

Everything that shapes a network or a run lives here as typed values (no mode strings parsed later). ``PRESETS``
maps a preset name to a full :class:`Config`; ``apply_overrides`` applies ``section.field=value`` strings with type
checking; ``config_to_dict``/``config_from_dict`` give an exact JSON round-trip. Only the standard library is used.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmv_torch.fileio import atomic_write_text

VIDEO_BACKBONES = ("s3d", "tsm_resnet", "r2plus1d")
S3D_STEMS = ("space_to_depth", "standard")
GRAPHS = ("shared", "disjoint", "fac")
FAC_ACTIVATIONS = ("none", "relu", "bnrelu")
SPACES = ("va", "vt", "at")
MODALITIES = ("video", "audio", "text")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {list(choices)}")


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class BatchNormConfig:
    """BatchNorm settings shared by every tower and head (the official models use one config)."""

    eps: float = 1e-5
    """Epsilon added to the variance (official: 1e-5)."""
    momentum: float = 0.1
    """PyTorch-style running-statistics momentum (official EMA decay 0.9 == momentum 0.1)."""

    def __post_init__(self) -> None:
        _check_positive("bn.eps", self.eps)
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"bn.momentum must be in [0, 1], got {self.momentum!r}")


@dataclass(frozen=True)
class VideoConfig:
    """The video tower."""

    backbone: str = "s3d"
    """One of 's3d' (S3D-G), 'tsm_resnet' (TSM-ResNetV2), 'r2plus1d' (R(2+1)D)."""
    depth: int = 50
    """ResNet depth: 50 for TSM (also 18/34/101), 18 (or 34) for R(2+1)D; ignored by S3D."""
    width_mult: float = 1.0
    """Channel multiplier (TSM-ResNet50x2 is 2; tiny models use a fraction)."""
    s3d_stem: str = "space_to_depth"
    """S3D first layer: 'space_to_depth' (released checkpoint, 24 ch, done in the model) or 'standard'."""
    s3d_gating: bool = True
    """S3D-G self-gating (False gives plain S3D)."""
    shift_fraction: float = 0.125
    """TSM: fraction of channels shifted forward and (the same number) backward in time."""

    def __post_init__(self) -> None:
        _check_choice("video.backbone", self.backbone, VIDEO_BACKBONES)
        _check_choice("video.s3d_stem", self.s3d_stem, S3D_STEMS)
        _check_positive("video.width_mult", self.width_mult)
        if not 0.0 <= self.shift_fraction <= 0.5:
            raise ValueError(f"video.shift_fraction must be in [0, 0.5], got {self.shift_fraction!r}")
        if self.backbone == "tsm_resnet" and self.depth not in (18, 34, 50, 101, 152):
            raise ValueError(f"video.depth={self.depth} is not a TSM-ResNet depth (18, 34, 50, 101, 152)")
        if self.backbone == "r2plus1d" and self.depth not in (10, 18, 34):
            raise ValueError(f"video.depth={self.depth} is not an R(2+1)D depth (10, 18, 34)")


@dataclass(frozen=True)
class AudioConfig:
    """The audio tower: ResNetV2 on a log-mel spectrogram ``(B, 1, T, F)``."""

    depth: int = 50
    """ResNetV2 depth: 18, 34, 50 or 101."""
    width_mult: float = 1.0
    """Channel multiplier (1.0 is the official network)."""

    def __post_init__(self) -> None:
        if self.depth not in (18, 34, 50, 101):
            raise ValueError(f"audio.depth={self.depth} is not one of [18, 34, 50, 101]")
        _check_positive("audio.width_mult", self.width_mult)


@dataclass(frozen=True)
class TextConfig:
    """The text tower: frozen word vectors -> linear to ``hidden_dim`` -> ReLU -> max over words."""

    vocab_size: int = 65536
    """Rows of the word-vector table."""
    word_dim: int = 300
    """Word-vector size (300 for word2vec GoogleNews, 50 for the bundled GloVe 6B 50d)."""
    hidden_dim: int = 2048
    """Sentence representation size (official ``sentence_dim``)."""
    max_words: int = 16
    """Words kept per sentence after stop-word removal."""
    mask_padding: bool = False
    """Exclude padding positions from the max (the official model does not mask)."""
    padding_id: int = 0
    """Word id used for padding."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "word_dim", "hidden_dim", "max_words"):
            _check_positive(f"text.{name}", getattr(self, name))
        if not 0 <= self.padding_id < self.vocab_size:
            raise ValueError(f"text.padding_id={self.padding_id} outside [0, {self.vocab_size})")


@dataclass(frozen=True)
class HeadConfig:
    """One projection head into an embedding space (official ``EmbeddingModule``)."""

    hidden: tuple[int, ...] = ()
    """Hidden sizes of an MLP head; empty means a linear head."""
    inner_bn: bool = True
    """BN after each hidden linear (official 'mlp'); False is 'mlp_nobn'."""
    bn_after_proj: bool = False
    """BN after the final projection. In an MLP head this also drops the final bias."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        for h in self.hidden:
            _check_positive("head.hidden", h)


@dataclass(frozen=True)
class SpaceConfig:
    """An embedding space and its heads: (video, audio) for ``va``, (video, text) ``vt``, (audio, text) ``at``."""

    dim: int
    """Embedding size of the space."""
    first: HeadConfig = field(default_factory=HeadConfig)
    """Head of the first modality of the pair."""
    second: HeadConfig = field(default_factory=HeadConfig)
    """Head of the second modality of the pair."""

    def __post_init__(self) -> None:
        _check_positive("space.dim", self.dim)


def _official_spaces() -> dict[str, SpaceConfig]:
    return {
        "va": SpaceConfig(512, HeadConfig(hidden=(512,), bn_after_proj=True), HeadConfig()),
        "vt": SpaceConfig(256, HeadConfig(bn_after_proj=True), HeadConfig()),
        "at": SpaceConfig(512, HeadConfig(), HeadConfig()),
    }


@dataclass(frozen=True)
class ModelConfig:
    """The whole MMV network: three towers, the heads and the embedding graph."""

    video: VideoConfig = field(default_factory=VideoConfig)
    """Video tower."""
    audio: AudioConfig = field(default_factory=AudioConfig)
    """Audio tower."""
    text: TextConfig = field(default_factory=TextConfig)
    """Text tower."""
    graph: str = "fac"
    """Embedding graph: 'shared' (one space S_vat), 'disjoint' (S_va, S_vt) or 'fac' (fine and coarse)."""
    fac_activation: str = "relu"
    """Between S_va and S_vat under FAC: 'none', 'relu' (released models) or 'bnrelu'."""
    spaces: dict[str, SpaceConfig] = field(default_factory=_official_spaces)
    """Embedding spaces keyed 'va', 'vt', 'at'."""
    bn: BatchNormConfig = field(default_factory=BatchNormConfig)
    """BatchNorm settings for every tower and head."""

    def __post_init__(self) -> None:
        _check_choice("model.graph", self.graph, GRAPHS)
        _check_choice("model.fac_activation", self.fac_activation, FAC_ACTIVATIONS)
        missing = [s for s in SPACES if s not in self.spaces]
        unknown = [s for s in self.spaces if s not in SPACES]
        if missing or unknown:
            raise ValueError(f"model.spaces needs exactly {list(SPACES)}; missing {missing}, unknown {unknown}")
        if self.graph == "shared":
            self._check_shared()

    def _check_shared(self) -> None:
        """The shared graph has one space: every space one dim and one video head; the error names the
        ``--set`` overrides that make this config shared (the space dims and the video head of 'va')."""
        import shlex

        va = self.spaces["va"]
        fixes = [f"model.spaces.{s}.dim={va.dim}" for s in SPACES if self.spaces[s].dim != va.dim]
        if self.spaces["vt"].first != va.first:
            fixes.append("model.spaces.vt.first=" + json.dumps(dataclasses.asdict(va.first), separators=(",", ":")))
        if fixes:
            dims = sorted({self.spaces[s].dim for s in SPACES})
            raise ValueError(f"graph 'shared' needs one dim for every space (got {dims}) and the same video head for "
                             f"'va' and 'vt'; with this config add: --set {' '.join(shlex.quote(f) for f in fixes)}")


@dataclass(frozen=True)
class LossConfig:
    """The self-supervised loss: NCE(video, audio) + MIL-NCE(video, narrations)."""

    temperature: float = 0.07
    """Softmax temperature tau."""
    weight_va: float = 1.0
    """lambda_va, weight of NCE between video and audio."""
    weight_vt: float = 1.0
    """lambda_vt, weight of MIL-NCE between video and text."""
    weight_at: float = 0.0
    """lambda_at, weight of MIL-NCE between audio and the K narrations (0: unused, as in the paper)."""
    normalize: bool = True
    """L2-normalise embeddings before the dot product."""
    form: str = "joint"
    """'joint': one softmax per positive whose denominator holds the negative pairs of both directions (the
    paper's NCE and MIL-NCE equations; the default since this field was added) or 'mean': the average of the
    two one-directional softmaxes (video->other, other->video), the loss before this field existed."""
    symmetric: bool = True
    """Both directions; False (the video->other direction only) needs form 'mean'."""
    silence_range: float = 1e-3
    """A clip whose log-mel window is flat, max - min <= this (natural-log units; digital silence gives exactly 0,
    every bin at log(log_offset)), counts as "no audio" in the audio terms (counted in the log); < 0: off."""

    def __post_init__(self) -> None:
        _check_positive("loss.temperature", self.temperature)
        if self.form not in ("joint", "mean"):
            raise ValueError(f"loss.form must be 'joint' or 'mean', got {self.form!r}")
        if self.form == "joint" and not self.symmetric:
            raise ValueError("loss.symmetric=false (one direction only) needs loss.form='mean'")
        for name in ("weight_va", "weight_vt", "weight_at"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss.{name} must be >= 0")


@dataclass(frozen=True)
class DataConfig:
    """Inputs of pretraining: clip sampling, augmentation, audio features and text."""

    num_frames: int = 32
    """Frames per clip."""
    fps: float = 10.0
    """Frame rate the clip is sampled at (paper: 32 frames at 10 fps)."""
    crop_size: int = 200
    """Training crop (224 at evaluation)."""
    eval_crop_size: int = 224
    """Evaluation centre crop."""
    resize_short: int = 224
    """Short side after resize, before cropping."""
    augment: str = "dmvr"
    """Training augmentation: 'dmvr' (DMVR's scale_jitter_augm and color_default_augm: independent height and
    width scale factors with probability scale_prob, brightness/saturation/contrast/hue with probability
    color_prob; the default since this field was added) or 'default' (one scale factor, color_jitter; the
    augmentation before this field existed)."""
    augment_on: str = "batch"
    """Where the pixels of the 'dmvr' augmentation are computed: 'batch' (the default: workers decode, draw the
    augmentation and return the uint8 frames with the draw; the training step resizes, crops, flips and colours
    whole batches on its device, the same draws and pixels within 1/255) or 'worker' (per clip, in the data
    workers; the default before 2026-12-08). Frames travel at their source size under 'batch': for sources much
    larger than the training size take 'worker' or transcode first. The 'default' augmentation always runs in
    the workers."""
    scale_jitter: tuple[float, float] = (0.8, 1.2)
    """Range of the random scale of the resize before cropping (per axis with 'dmvr')."""
    scale_prob: float = 0.8
    """'dmvr': probability of the scale jitter."""
    flip: bool = True
    """Random horizontal flip."""
    color_prob: float = 0.8
    """'dmvr': probability of DMVR's colour augmentation (fixed strengths); 0 turns colour off."""
    color_jitter: float = 0.4
    """'default': strength of brightness/contrast/saturation jitter (hue gets a tenth); 0 disables."""
    audio_seconds: float = 2.0
    """Audio window length in seconds."""
    sample_rate: int = 16000
    """Audio sample rate."""
    num_mel_bins: int = 80
    """Log-mel bins."""
    audio_frontend: str = "default"
    """Log-mel front-end: 'default' (25 ms window, 10 ms hop) or 'dmvr' (DMVR's spectrogram, the input of
    the released models: needs sample_rate 48000)."""
    num_candidates: int = 5
    """K: narrations nearest to the clip used as MIL-NCE candidates."""
    max_words: int = 16
    """Words per narration after tokenisation."""
    tokenizer: str = "default"
    """Raw text -> ids: 'default' (lower case, stop words removed, unknown words dropped) or 'dmvr' (DMVR's
    WordTokenizer, what the released models were fed: needs a DMVR vocabulary)."""
    word_vectors: str = "glove-6b-50d"
    """Word vectors: 'glove-6b-50d' (bundled) or a path to word2vec/GloVe files."""
    extra_vocab_words: int = 50000
    """The word table of a trained model holds the narration words plus the words among the first this many
    rows of ``word_vectors`` (frequency ordered), so benchmark captions rarely meet an unknown word; 0: the
    narration words only."""
    max_skip_rate: float = 0.1
    """Stop with an error when more than this fraction of files fails to decode."""
    clips_per_video: int = 1
    """Repeated sampling: clips drawn (independently) from each opened video; a batch holds train.batch_size /
    clips_per_video videos. Near clips share one decoding pass; clips of a video are not negatives of each other."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale_jitter", tuple(float(s) for s in self.scale_jitter))
        for name in ("num_frames", "fps", "crop_size", "eval_crop_size", "resize_short", "audio_seconds",
                     "sample_rate", "num_mel_bins", "num_candidates", "max_words", "clips_per_video"):
            _check_positive(f"data.{name}", getattr(self, name))
        if len(self.scale_jitter) != 2 or not 0 < self.scale_jitter[0] <= self.scale_jitter[1]:
            raise ValueError(f"data.scale_jitter must be (low, high) with 0 < low <= high, got {self.scale_jitter}")
        _check_choice("data.audio_frontend", self.audio_frontend, ("default", "dmvr"))
        _check_choice("data.tokenizer", self.tokenizer, ("default", "dmvr"))
        if self.audio_frontend == "dmvr" and self.sample_rate != 48000:
            raise ValueError(f"data.audio_frontend 'dmvr' needs data.sample_rate 48000, got {self.sample_rate}")
        if self.extra_vocab_words < 0:
            raise ValueError(f"data.extra_vocab_words must be >= 0, got {self.extra_vocab_words}")
        if not 0.0 <= self.max_skip_rate <= 1.0:
            raise ValueError(f"data.max_skip_rate must be in [0, 1], got {self.max_skip_rate}")
        if not self.color_jitter >= 0:
            raise ValueError(f"data.color_jitter must be >= 0, got {self.color_jitter}")
        if self.augment not in ("dmvr", "default"):
            raise ValueError(f"data.augment must be 'dmvr' or 'default', got {self.augment!r}")
        _check_choice("data.augment_on", self.augment_on, ("worker", "batch"))
        for name in ("scale_prob", "color_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"data.{name} must be in [0, 1], got {getattr(self, name)}")

    @property
    def batch_augment(self) -> bool:
        """The training samples carry uint8 ``frames`` and the drawn ``augment`` instead of ``video``: 'dmvr'
        augmentation with ``augment_on = 'batch'``."""
        return self.augment_on == "batch" and self.augment == "dmvr"


@dataclass(frozen=True)
class TrainConfig:
    """The training loop."""

    batch_size: int = 8
    """Clips per process per step."""
    steps: int = 1000
    """Optimizer steps."""
    lr: float = 2e-3
    """Peak Adam learning rate (paper: 0.002)."""
    warmup_steps: int = 0
    """Linear warm-up steps before cosine decay."""
    weight_decay: float = 0.0
    """Decoupled weight decay (0: plain Adam as in the paper)."""
    grad_clip: float = 0.0
    """Clip the global gradient norm to this value (0: off)."""
    grad_accum: int = 1
    """Micro-batches whose gradients are AVERAGED per optimizer step. Each micro-batch has its own loss, so
    it adds no negatives (a clip sees batch_size x world clips); train.contrastive_batch enlarges the loss."""
    contrastive_batch: int = 0
    """Clips, over all processes, whose embeddings enter ONE loss per optimizer step (0: batch_size x world).
    The step runs contrastive_batch / (batch_size x world) micro-batches by gradient caching: the exact
    gradient of the large-batch loss with the activation memory of one micro-batch (train/gradcache.py)."""
    precision: str = "fp32"
    """'fp32', 'bf16' or 'fp16' (autocast; the last two on GPU)."""
    channels_last: bool = True
    """Use channels_last_3d memory format for the video tower."""
    compile: bool = False
    """Wrap the model in torch.compile."""
    num_workers: int = 2
    """Data-loader worker processes."""
    seed: int = 0
    """Base random seed."""
    log_every: int = 10
    """Steps between log lines."""
    ckpt_every: int = 500
    """Steps between checkpoints."""
    keep_ckpts: int = 3
    """Checkpoints kept on disk."""
    max_bad_steps: int = 10
    """Stop after this many skipped steps with a non-finite loss."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "steps", "lr", "grad_accum", "log_every", "ckpt_every", "keep_ckpts"):
            _check_positive(f"train.{name}", getattr(self, name))
        _check_choice("train.precision", self.precision, ("fp32", "bf16", "fp16"))
        for name in ("warmup_steps", "weight_decay", "grad_clip", "num_workers", "max_bad_steps", "contrastive_batch"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0")
        if self.contrastive_batch and self.grad_accum != 1:
            raise ValueError(f"train.contrastive_batch={self.contrastive_batch} sets the micro-batches per step "
                             f"itself; it cannot be combined with train.grad_accum={self.grad_accum} (leave it at 1)")
        if self.contrastive_batch % self.batch_size:
            raise ValueError(f"train.contrastive_batch ({self.contrastive_batch}) must be a multiple of "
                             f"train.batch_size ({self.batch_size}) x the number of processes")

    def micro_batches(self, world: int = 1) -> int:
        """Micro-batches per optimizer step on ``world`` processes: ``contrastive_batch / (batch_size x world)``
        when ``contrastive_batch`` is set, else ``grad_accum``; ValueError when that is not a whole number."""
        if not self.contrastive_batch:
            return self.grad_accum
        per_step = self.batch_size * world
        if self.contrastive_batch % per_step:
            raise ValueError(f"train.contrastive_batch ({self.contrastive_batch}) is not a multiple of "
                             f"train.batch_size ({self.batch_size}) x {world} processes = {per_step}; "
                             "choose a batch_size that divides it")
        return self.contrastive_batch // per_step


@dataclass(frozen=True)
class Config:
    """A full run: model, loss, data and training loop."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The network."""
    loss: LossConfig = field(default_factory=LossConfig)
    """The loss."""
    data: DataConfig = field(default_factory=DataConfig)
    """The inputs."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The training loop."""

    def __post_init__(self) -> None:
        if self.train.batch_size % self.data.clips_per_video:
            raise ValueError(f"train.batch_size ({self.train.batch_size}) must be a multiple of data.clips_per_video "
                             f"({self.data.clips_per_video})")


# ---------------------------------------------------------------------------------------------
# Presets

def _tiny() -> Config:
    spaces = {
        "va": SpaceConfig(64, HeadConfig(hidden=(64,), bn_after_proj=True), HeadConfig()),
        "vt": SpaceConfig(32, HeadConfig(bn_after_proj=True), HeadConfig()),
        "at": SpaceConfig(64, HeadConfig(), HeadConfig()),
    }
    model = ModelConfig(
        video=VideoConfig(backbone="s3d", width_mult=0.25, s3d_stem="standard"),
        audio=AudioConfig(depth=18, width_mult=0.125),
        text=TextConfig(vocab_size=1000, word_dim=50, hidden_dim=128),
        spaces=spaces,
    )
    data = DataConfig(num_frames=8, fps=8.0, crop_size=64, eval_crop_size=64, resize_short=72,
                      audio_seconds=1.0, num_mel_bins=40, num_candidates=3)
    train = TrainConfig(batch_size=16, steps=300, lr=2e-3, warmup_steps=20, ckpt_every=100)
    return Config(model=model, data=data, train=train)


def _s3d() -> Config:
    return Config(model=ModelConfig(video=VideoConfig(backbone="s3d")))


def _tsm(width: float) -> Config:
    return Config(model=ModelConfig(video=VideoConfig(backbone="tsm_resnet", depth=50, width_mult=width)))


def _r2plus1d() -> Config:
    # Video-audio only model of the paper's R(2+1)D-18 row: the text weight is off.
    model = ModelConfig(video=VideoConfig(backbone="r2plus1d", depth=18), graph="disjoint")
    return Config(model=model, loss=LossConfig(weight_vt=0.0))


PRESETS: dict[str, Config] = {
    "mmv_s3d": _s3d(),
    "mmv_tsm_r50": _tsm(1.0),
    "mmv_tsm_r50x2": _tsm(2.0),
    "va_r2plus1d_18": _r2plus1d(),
    "tiny": _tiny(),
}


def get_preset(name: str) -> Config:
    """The preset ``name``; a ``ValueError`` lists the valid names."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {sorted(PRESETS)}")
    return PRESETS[name]


# ---------------------------------------------------------------------------------------------
# Overrides and JSON

def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Convert a JSON/CLI value to the annotated type ``tp`` or raise ``ValueError``."""
    if isinstance(value, _CliText):
        value = value.for_type(tp)
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return _from_dict(tp, value, where)
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
        return {_convert(k, key_tp, where): _convert(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        elem = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if elem is None and len(args) != len(value):
            raise ValueError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(v, elem if elem is not None else a, where)
                     for v, a in zip(value, [elem] * len(value) if elem is not None else args))
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            if arg is type(None):
                if value is None or value == "None":
                    return None
                continue
            try:
                return _convert(value, arg, where)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(f"{where}: {value!r} matches none of {tp}: {errors}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):  # ``--set data.flip=0`` arrives as the JSON number 0
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ValueError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ValueError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None or not math.isfinite(number):
            raise ValueError(f"{where}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported config type {tp}")


def _did_you_mean(key: str, valid: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean {prefix + close[0]!r}?)" if close else ""


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = _field_types(cls)
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    unknown = sorted(set(data) - set(names), key=str)
    if unknown:
        hint = _did_you_mean(unknown[0], names) if isinstance(unknown[0], str) else ""
        raise ValueError(f"{where or 'config'}: unknown keys {unknown}{hint}; valid keys: {names}")
    missing = [f.name for f in fields if f.name not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"{where or 'config'}: missing keys {missing}")
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready nested dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_from_dict(data: dict[str, Any], cls: type = Config) -> Any:
    """Rebuild a config from :func:`config_to_dict` output; unknown keys raise ``ValueError``; missing keys take
    their defaults, so configs saved by older versions still load."""
    return _from_dict(cls, data, "")


def save_config(cfg: Config, path: str | Path) -> None:
    """Write ``cfg`` as JSON to ``path`` (atomically)."""
    atomic_write_text(path, json.dumps(config_to_dict(cfg), indent=2, sort_keys=True) + "\n")


ORIGIN_KEY = "origin"
"""A weights folder's ``config.json`` may hold, beside the config, where its weights came from (URL, licence,
checksum; written by ``mmv-torch fetch``): metadata that :func:`load_config` leaves out."""


def load_config(path: str | Path) -> Config:
    """Read a config written by :func:`save_config` (a top-level :data:`ORIGIN_KEY` is metadata and left
    out); a missing, unreadable or invalid file raises a ``ValueError`` naming it."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:  # ValueError: invalid JSON or not UTF-8
        raise ValueError(f"cannot read config {p}: {e}") from e
    if isinstance(data, dict):
        data.pop(ORIGIN_KEY, None)
    try:
        return config_from_dict(data)
    except ValueError as e:
        raise ValueError(f"invalid config {p}: {e}") from e


def _parse_cli_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@dataclass(frozen=True)
class _CliText:
    """The value of a ``key=value`` override as written; parsed once the field's type is known."""

    text: str

    def for_type(self, tp: Any) -> Any:
        """The text for a string field (``data.word_vectors=2024`` is the path '2024'), else its JSON value
        (numbers, booleans, null, lists, mappings) or, when it is not JSON, the text."""
        value = _parse_cli_value(self.text)
        return value if tp is not str or isinstance(value, str) else self.text


def _set_key(data: dict[str, Any], key: str, value: Any, prefix: str = "") -> None:
    """Set the dotted ``key`` in the nested dict ``data`` (at ``prefix`` of the config, for messages); a mapping
    set on a section updates it key by key."""
    parts = (prefix + key).split(".")
    start = len(parts) - len(key.split("."))
    node: Any = data
    for i, p in enumerate(parts[start:], start):
        where = ".".join(parts[: i + 1])
        if not isinstance(node, dict):
            raise ValueError(f"unknown config key {key!r}: {'.'.join(parts[:i])!r} is a value, not a section")
        if p not in node:
            hint = _did_you_mean(p, sorted(node), where[: len(where) - len(p)])
            raise ValueError(f"unknown config key {where!r}{hint}; valid keys here: {sorted(node)}")
        if i < len(parts) - 1:
            node = node[p]
        elif isinstance(node[p], dict) and isinstance(value, (dict, _CliText)):
            section = value.for_type(dict) if isinstance(value, _CliText) else value
            if not isinstance(section, dict):
                raise ValueError(f"{where}: expected a mapping of its keys, got {section!r}")
            for k, v in section.items():
                _set_key(node[p], str(k), v, where + ".")
        else:
            node[p] = value


def apply_overrides(cfg: Any, overrides: list[str] | dict[str, Any]) -> Any:
    """Return ``cfg`` with ``key=value`` overrides applied (``"train.lr=1e-3"``, ``"model.graph=shared"``).

    Keys are dotted paths through the dataclasses and the ``spaces`` mapping
    (``model.spaces.va.dim=128``). Values are parsed as JSON when they can be, else taken as
    strings, then converted to the field's type (a string field takes the text as written). A mapping
    given for a section (``model.video={"depth": 18}``) sets those keys and keeps the others. Unknown
    keys raise ``ValueError`` suggesting the closest name and listing the valid ones.
    """
    items: list[tuple[str, Any]]
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        items = []
        for ov in [overrides] if isinstance(overrides, str) else overrides:
            if "=" not in ov:
                raise ValueError(f"override {ov!r} is not of the form key=value")
            k, v = ov.split("=", 1)
            items.append((k.strip(), _CliText(v.strip())))
    data = dataclasses.asdict(cfg)
    for key, value in items:
        _set_key(data, key, value)
    return _from_dict(type(cfg), data, "")
