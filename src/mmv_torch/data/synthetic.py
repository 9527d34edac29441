"""Synthetic narrated videos whose video, audio and text are correlated (docs/synthetic_data.md).

Each clip is drawn from independent latent factors:

- an **object** (8 classes) sets the shape, a two-colour palette (80% of clips), the sound timbre and
  pitch range, and the nouns of the text -> the sound-class label;
- a **motion** (8 classes) sets the trajectory and the sound onsets, which coincide with visual
  events (impacts, half-turns, quarter-laps, turns, pulse maxima; a tremolo for shake, sustained
  notes for slide) -> the action label;
- a **narration** from a small grammar, emitted as ASR-style segments with word dropout and
  alignment noise (aligned / shifted / unrelated chit-chat), optionally spoken with ``espeak-ng``
  and mixed into the audio, plus a separate clean caption with independently drawn synonyms;
- **nuisances**: background (solid, gradient, noise texture, stripes) with a slow pan, a silent grey
  distractor, speed, size, phase and direction, an off-screen sound of another class, background
  noise or hum at 0-25 dB SNR, pitch offsets and velocities.

:func:`make_clip` returns one clip in memory (uint8 frames ``[T, H, W, 3]``, float32 mono audio
``[S]``, narration, caption, labels). :func:`write_dataset` writes mp4 files (H.264 yuv420p + AAC
mono, with PyAV), a JSON sidecar per clip and the manifests (pretraining, probes, retrieval).
Everything is deterministic: each clip's seed derives from the set seed, its split and its index.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import sys
import time
import wave
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------------------------
# Latent factor tables


@dataclass(frozen=True)
class ObjectClass:
    """An object class: shape, palette, sound and nouns."""

    name: str
    palette: tuple[str, str]
    timbre: str
    pitch: tuple[int, int]
    """MIDI note range of its sounds."""
    nouns: tuple[str, str, str]
    rare_noun: str
    """A synonym never used in pretraining text (for retrieval with unseen synonyms)."""


@dataclass(frozen=True)
class MotionClass:
    """A motion class: event rate and verb phrases (third person, present)."""

    name: str
    base_rate: float
    """Cycles per second at speed 1."""
    events_per_cycle: int
    verbs: tuple[str, str, str]
    rare_verb: str


OBJECTS: tuple[ObjectClass, ...] = (
    ObjectClass("ball", ("red", "yellow"), "marimba", (60, 79), ("ball", "sphere", "orb"), "globe"),
    ObjectClass("cube", ("blue", "orange"), "drum", (36, 50), ("cube", "box", "block"), "brick"),
    ObjectClass("star", ("gold", "purple"), "bell", (72, 88), ("star", "pentagram", "asterisk"), "starburst"),
    ObjectClass("triangle", ("green", "white"), "flute", (72, 88), ("triangle", "pyramid", "wedge"), "delta"),
    ObjectClass("ring", ("cyan", "magenta"), "string", (48, 67), ("ring", "donut", "hoop"), "loop"),
    ObjectClass("cross", ("white", "red"), "brass", (50, 67), ("cross", "plus", "intersection"), "crosshair"),
    ObjectClass("diamond", ("pink", "teal"), "pluck", (52, 72), ("diamond", "rhombus", "lozenge"), "kite"),
    ObjectClass("hexagon", ("orange", "navy"), "click", (72, 84), ("hexagon", "honeycomb", "hex"), "polygon"),
)

MOTIONS: tuple[MotionClass, ...] = (
    MotionClass("bounce", 1.4, 1, ("bounces", "hops up and down", "jumps on the floor"), "rebounds"),
    MotionClass("slide", 0.6, 1, ("slides", "glides across", "drifts sideways"), "skids"),
    MotionClass("spin", 0.6, 2, ("spins", "rotates", "twirls around"), "whirls"),
    MotionClass("pulse", 1.2, 1, ("pulses", "grows and shrinks", "zooms in and out"), "throbs"),
    MotionClass("orbit", 0.35, 4, ("orbits", "circles around", "goes round in a circle"), "revolves"),
    MotionClass("shake", 6.0, 1, ("shakes", "vibrates", "wobbles"), "trembles"),
    MotionClass("fall", 1.0, 1, ("falls", "drops down", "tumbles down"), "plummets"),
    MotionClass("zigzag", 1.5, 1, ("zigzags", "weaves left and right", "swerves back and forth"), "meanders"),
)

OBJECT_NAMES: tuple[str, ...] = tuple(o.name for o in OBJECTS)
MOTION_NAMES: tuple[str, ...] = tuple(m.name for m in MOTIONS)


def class_phrases() -> dict[str, list[str]]:
    """The words the narrations use for each class label, written to ``classnames.json`` for ``eval zeroshot
    --classnames``: a motion's verb phrases (the labels are stems such as ``bounce``, which no narration says), an
    object's nouns (the sound classes are the objects)."""
    return {**{m.name: list(m.verbs) for m in MOTIONS}, **{o.name: list(o.nouns) for o in OBJECTS}}

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "orange": (245, 130, 20), "yellow": (245, 225, 40), "green": (40, 180, 60),
    "blue": (40, 80, 230), "purple": (130, 50, 190), "pink": (250, 120, 180), "brown": (130, 80, 40),
    "cyan": (40, 220, 230), "magenta": (220, 40, 200), "white": (245, 245, 245), "black": (15, 15, 15),
    "teal": (20, 128, 128), "navy": (20, 30, 110), "gold": (212, 175, 55), "lime": (160, 240, 50),
}

TIMBRE_WORDS: dict[str, tuple[str, ...]] = {
    "marimba": ("a marimba", "wooden notes", "a xylophone"),
    "drum": ("a drum", "drum hits", "a thump"),
    "bell": ("a bell", "chimes", "a ding"),
    "flute": ("a flute", "a whistle", "airy notes"),
    "string": ("a violin", "a cello", "strings"),
    "brass": ("a trumpet", "a horn", "brass"),
    "pluck": ("a guitar", "plucked strings", "a harp"),
    "click": ("clicks", "a woodblock", "clacks"),
}

BACKGROUNDS: tuple[str, ...] = ("solid", "gradient", "noise", "stripes")
BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {
    "solid": ("plain", "flat"), "gradient": ("gradient", "shaded"), "noise": ("textured", "cloudy"),
    "stripes": ("striped", "lined"),
}

OPENERS: tuple[str, ...] = ("okay so", "now", "alright", "so here", "next", "and now", "in this part",
                            "right so", "let's see", "here we go")
FILLERS: tuple[str, ...] = ("um", "uh", "you know", "like", "basically")
CHITCHAT: tuple[str, ...] = (
    "don't forget to subscribe", "thanks for watching", "let me know in the comments",
    "i bought this at the store last week", "my camera is a bit old", "it is really sunny today",
    "hit the like button", "see you next time", "check the link below", "this took me a while",
)

GENERATOR_VERSION = 2
"""Bumped whenever the same seed and options give other clips or splits (2: the held-out retrieval
combinations are four objects with two motions each). Written to ``labels.json``; the demo regenerates
a data set made by another version."""

SPLITS: tuple[str, ...] = ("pretrain", "probe_train", "probe_test", "retrieval")
NARRATION_MODES: tuple[str, ...] = ("aligned", "shifted", "unrelated")


def vocabulary_words() -> list[str]:
    """Every word the text grammar can produce (nouns, verbs, colours, sounds, openers, ...)."""
    texts: list[str] = list(COLOURS) + list(OPENERS) + list(FILLERS) + list(CHITCHAT)
    for o in OBJECTS:
        texts += [*o.nouns, o.rare_noun]
    for m in MOTIONS:
        texts += [*m.verbs, m.rare_verb]
    for words in (*TIMBRE_WORDS.values(), *BACKGROUND_WORDS.values()):
        texts += list(words)
    texts += ["the", "a", "an", "on", "in", "front", "of", "background", "and", "you", "can", "hear"]
    return sorted({w for t in texts for w in t.split()})


# ---------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class GeneratorOptions:
    """Difficulty knobs of the generator (described in docs/synthetic_data.md)."""

    palette_prob: float = 0.8
    """Probability that the object uses its class palette (else random colours)."""
    snr_db: tuple[float, float] = (0.0, 25.0)
    """Range of the signal-to-noise ratio of the background noise or hum, in dB."""
    p_offscreen: float = 0.15
    """Probability of an off-screen sound of another class."""
    p_distractor: float = 0.3
    """Probability of a silent grey distractor shape."""
    speed: tuple[float, float] = (0.6, 1.6)
    """Range of the speed multiplier of the motion."""
    object_size: tuple[float, float] = (0.10, 0.17)
    """Range of the object radius as a fraction of the frame size."""
    p_aligned: float = 0.6
    """Probability that a narration segment is aligned with the clip."""
    p_shifted: float = 0.25
    """Probability that it is shifted by 1-3 s (the rest is unrelated chit-chat)."""
    word_dropout: float = 0.05
    """Probability that an ASR word is dropped."""
    p_no_narration: float = 0.1
    """Probability that a clip has no narration at all (AudioSet-like)."""
    p_second_segment: float = 0.5
    """Probability of a second narration segment."""
    p_sound_word: float = 0.5
    """Probability that a description ends with 'and you can hear <sound>'."""
    p_alt_timbre: float = 0.0
    """Probability that the object sounds with another class's timbre (makes audio->object harder)."""
    speech: bool = False
    """Speak the narration with espeak-ng and mix it into the audio (needs the espeak-ng binary)."""
    antialias: bool = True
    """Render frames at 2x and average (smooth edges); off is faster."""
    backgrounds: tuple[str, ...] = BACKGROUNDS
    """Background kinds to draw from."""

    def __post_init__(self) -> None:
        for name in ("palette_prob", "p_offscreen", "p_distractor", "p_aligned", "p_shifted", "word_dropout",
                     "p_no_narration", "p_second_segment", "p_sound_word", "p_alt_timbre"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"GeneratorOptions.{name} must be in [0, 1], got {v!r}")
        if self.p_aligned + self.p_shifted > 1.0:
            raise ValueError("GeneratorOptions.p_aligned + p_shifted must be <= 1")
        for name in ("snr_db", "speed", "object_size"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"GeneratorOptions.{name} must be (low, high) with low <= high")
        if not 0 < self.speed[0] or not 0 < self.object_size[0] or self.object_size[1] > 0.3:
            raise ValueError("GeneratorOptions.speed must be > 0 and object_size in (0, 0.3]")
        bad = [b for b in self.backgrounds if b not in BACKGROUNDS]
        if bad or not self.backgrounds:
            raise ValueError(f"GeneratorOptions.backgrounds {list(self.backgrounds)} must be a non-empty "
                             f"subset of {list(BACKGROUNDS)}")


# ---------------------------------------------------------------------------------------------
# Seeds and splits


def clip_seed(seed: int, split: str, index: int) -> int:
    """The seed of clip ``index`` of ``split``: distinct, independent streams per split and index."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {list(SPLITS)}")
    if index < 0 or seed < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    ss = np.random.SeedSequence(entropy=seed, spawn_key=(SPLITS.index(split), index))
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def heldout_combinations(seed: int) -> list[tuple[str, str]]:
    """The 8 object x motion combinations held out of pretraining (12.5% of 64).

    Four objects with two held-out motions each, and every motion held out once: every object and
    every motion still appears in pretraining, and in the retrieval set each object names two
    combinations, so matching a caption to its clips takes the motion as well as the object.
    """
    rng = np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(97,)))
    objects = rng.permutation(8)[:4]
    motions = rng.permutation(8)
    return [(OBJECTS[int(objects[k // 2])].name, MOTIONS[int(motions[k])].name) for k in range(8)]


def _all_combinations() -> list[tuple[str, str]]:
    # Latin order: any 8 consecutive entries cover every object and every motion once.
    return [(OBJECTS[k % 8].name, MOTIONS[(k // 8 + k) % 8].name) for k in range(64)]


def split_combinations(seed: int, split: str) -> list[tuple[str, str]]:
    """The object x motion combinations a split draws from (pretraining excludes the held-out ones)."""
    held = heldout_combinations(seed)
    if split == "pretrain":
        return [c for c in _all_combinations() if c not in held]
    if split == "retrieval":
        return held
    if split in ("probe_train", "probe_test"):
        return _all_combinations()
    raise ValueError(f"split={split!r} is not one of {list(SPLITS)}")


# ---------------------------------------------------------------------------------------------
# Motion: trajectories and events


def _tri(x: np.ndarray) -> np.ndarray:
    """Triangle wave of period 2: 0 at even integers, 1 at odd integers."""
    m = np.mod(x, 2.0)
    return np.where(m <= 1.0, m, 2.0 - m)


def _fold(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect ``x`` into ``[lo, hi]`` (a drifting coordinate bouncing off the borders)."""
    return lo + (hi - lo) * _tri((x - lo) / (hi - lo))


def motion_phase(motion: dict[str, Any], t: np.ndarray) -> np.ndarray:
    """Cycle count ``theta(t) = rate * t + phase``; events happen where ``theta * k`` is an integer."""
    return motion["rate"] * np.asarray(t, dtype=np.float64) + motion["phase"]


def motion_state(motion: dict[str, Any], t: np.ndarray) -> tuple[np.ndarray, ...]:
    """Object centre, scale and angle at times ``t [T]``: ``(cx, cy, scale, angle)`` each ``[T]``.

    Coordinates are fractions of the frame (x right, y down); ``motion`` is the dict from
    :func:`_draw_motion` (``labels["motion_params"]``).
    """
    name, r = motion["name"], motion["radius"]
    t = np.asarray(t, dtype=np.float64)
    th = motion_phase(motion, t)
    d = motion["direction"]
    lo, hi = r + 0.04, 1.0 - r - 0.04
    x0, y0 = motion["x0"], motion["y0"]
    cx = np.full_like(t, x0)
    cy = np.full_like(t, y0)
    scale = np.ones_like(t)
    angle = np.full_like(t, motion["angle0"])
    if name == "bounce":
        top = lo + 0.1
        cy = hi - (hi - top) * np.abs(np.sin(np.pi * th))  # on the floor at integer theta
        cx = _fold(x0 + d * 0.08 * t, lo, hi)
    elif name == "slide":
        cx = lo + (hi - lo) * _tri(th) if d > 0 else hi - (hi - lo) * _tri(th)  # turns at integer theta
    elif name == "spin":
        angle = motion["angle0"] + 2 * np.pi * d * th  # half-turns at theta = n / 2
    elif name == "pulse":
        scale = 1.0 + 0.4 * np.cos(2 * np.pi * th)  # maxima at integer theta
    elif name == "orbit":
        radius = min(0.5 - r - 0.04, 0.28)
        a = 2 * np.pi * d * th  # quarter-laps at theta = n / 4
        cx, cy = 0.5 + radius * np.cos(a), 0.5 + radius * np.sin(a)
    elif name == "shake":
        amp = 0.05
        cx = x0 + amp * np.cos(2 * np.pi * th)  # extreme at integer theta
        cy = y0 + 0.4 * amp * np.sin(2 * np.pi * 1.7 * th)
    elif name == "fall":
        top = lo
        cy = top + (hi - top) * np.mod(th, 1.0) ** 2  # hits the floor as theta reaches an integer
        cx = np.clip(x0 + 0.25 * np.sin(2.39 * np.floor(th) + 10.0 * x0), lo, hi)
    elif name == "zigzag":
        cx = lo + (hi - lo) * _tri(th) if d > 0 else hi - (hi - lo) * _tri(th)  # turns at integer theta
        cy = _fold(y0 + d * 0.18 * t, lo, hi)
    else:
        raise ValueError(f"unknown motion {name!r}; valid: {list(MOTION_NAMES)}")
    return cx, cy, scale, angle


def motion_events(motion: dict[str, Any], t0: float, t1: float) -> np.ndarray:
    """Times in ``[t0, t1)`` of the visual events that carry a sound onset, ascending ``[E]``."""
    k = motion["events_per_cycle"]
    rate, phase = motion["rate"], motion["phase"]
    n0 = math.ceil(k * (rate * t0 + phase) - 1e-9)
    n1 = math.ceil(k * (rate * t1 + phase) - 1e-9)
    times = (np.arange(n0, n1) / k - phase) / rate
    return times[(times >= t0) & (times < t1)]


def _draw_motion(rng: np.random.Generator, name: str, opts: GeneratorOptions) -> dict[str, Any]:
    cls = MOTIONS[MOTION_NAMES.index(name)]
    speed = float(rng.uniform(*opts.speed))
    radius = float(rng.uniform(*opts.object_size))
    lo, hi = radius + 0.04, 1.0 - radius - 0.04
    return {
        "name": name, "speed": speed, "radius": radius, "rate": cls.base_rate * speed,
        "events_per_cycle": cls.events_per_cycle, "phase": float(rng.uniform(0.0, 1.0)),
        "direction": int(rng.choice([-1, 1])), "x0": float(rng.uniform(lo, hi)),
        "y0": float(rng.uniform(lo, hi)), "angle0": float(rng.uniform(0.0, 2 * np.pi)),
    }


# ---------------------------------------------------------------------------------------------
# Video rendering


def _polygon_radius(theta: np.ndarray, n: int) -> np.ndarray:
    """Boundary radius of a regular n-gon with circumradius 1 and a vertex at angle 0."""
    beta = np.mod(theta, 2 * np.pi / n)
    return np.cos(np.pi / n) / np.cos(beta - np.pi / n)


def _star_radius(theta: np.ndarray, points: int = 5, inner: float = 0.45) -> np.ndarray:
    """Boundary radius of a star with outer radius 1, a point at angle 0, straight edges."""
    delta = np.pi / points
    beta = np.mod(theta, 2 * delta)
    beta = np.minimum(beta, 2 * delta - beta)  # angle from the nearest outer point, in [0, delta]
    return inner * np.sin(delta) / (np.sin(beta) + inner * np.sin(delta - beta))


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test of a unit-size shape at local coordinates ``(u, v)`` (any equal shapes) -> bool."""
    if shape == "ball":
        return u * u + v * v <= 1.0
    if shape == "cube":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if shape == "ring":
        rho2 = u * u + v * v
        return (rho2 <= 1.0) & (rho2 >= 0.3)
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av <= 0.95)) | ((au <= 0.95) & (av <= 0.3))
    if shape == "diamond":
        return np.abs(u) / 0.65 + np.abs(v) <= 1.0
    rho = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u) + np.pi / 2  # a vertex pointing up
    if shape == "star":
        return rho <= 1.1 * _star_radius(theta)
    if shape == "triangle":
        return rho <= 1.15 * _polygon_radius(theta, 3)
    if shape == "hexagon":
        return rho <= 0.95 * _polygon_radius(theta, 6)
    raise ValueError(f"unknown shape {shape!r}; valid: {list(OBJECT_NAMES)}")


def _coverage(shape: str, u: np.ndarray, v: np.ndarray, ss: int) -> tuple[np.ndarray, np.ndarray]:
    """Fractions ``[h, w]`` of each pixel covered by the shape and by its primary-colour part.

    ``u, v`` are ``[h * ss, w * ss]`` sub-sample coordinates; ``ss`` sub-samples per pixel side.
    """
    inside = shape_mask(shape, u, v)
    inner = shape_mask(shape, u / 0.72, v / 0.72)  # the border (outside ``inner``) is the second colour
    dot = (u - 0.42) ** 2 + v * v <= 0.2**2  # an off-centre dot of the second colour shows rotation
    primary = inside & inner & ~dot
    h, w = u.shape[0] // ss, u.shape[1] // ss
    if ss == 1:
        return inside.astype(np.float32), primary.astype(np.float32)
    cov = inside.reshape(h, ss, w, ss).mean(axis=(1, 3), dtype=np.float32)
    return cov, primary.reshape(h, ss, w, ss).mean(axis=(1, 3), dtype=np.float32)


def _draw_shape(canvas: np.ndarray, shape: str, cx: np.ndarray, cy: np.ndarray, radius: np.ndarray,
                angle: np.ndarray, primary: np.ndarray, secondary: np.ndarray | None, ss: int) -> None:
    """Alpha-blend a shape into ``canvas [T, H, W, 3]`` float32, frame by frame, in its bounding box.

    ``ss`` sub-samples per pixel side give anti-aliased edges; ``secondary=None`` paints one colour.
    """
    _, h, w, _ = canvas.shape
    offs = (np.arange(ss, dtype=np.float32) + 0.5) / ss
    for i in range(canvas.shape[0]):
        rad = float(radius[i])
        x_lo, x_hi = max(0, int((cx[i] - 1.2 * rad) * w)), min(w, int((cx[i] + 1.2 * rad) * w) + 2)
        y_lo, y_hi = max(0, int((cy[i] - 1.2 * rad) * h)), min(h, int((cy[i] + 1.2 * rad) * h) + 2)
        if x_lo >= x_hi or y_lo >= y_hi:
            continue
        xs = ((np.arange(x_lo, x_hi, dtype=np.float32)[:, None] + offs).ravel() / w - cx[i])[None, :]
        ys = ((np.arange(y_lo, y_hi, dtype=np.float32)[:, None] + offs).ravel() / h - cy[i])[:, None]
        ca, sa = math.cos(-angle[i]), math.sin(-angle[i])
        u = (xs * ca - ys * sa) / rad
        v = (xs * sa + ys * ca) / rad
        cov, prim = _coverage(shape, u, v, ss)
        patch = canvas[i, y_lo:y_hi, x_lo:x_hi]
        if secondary is None:
            patch += cov[..., None] * (primary - patch)
        else:
            patch *= 1.0 - cov[..., None]
            patch += (cov - prim)[..., None] * secondary + prim[..., None] * primary


def _background(rng: np.random.Generator, kind: str, t: np.ndarray, size: int) -> tuple[np.ndarray, dict]:
    """Background frames ``[T, size, size, 3]`` float32 in 0..255, and their description."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    x, y = c[None, None, :], c[None, :, None]
    names = list(COLOURS)
    c1 = np.array(COLOURS[names[rng.integers(len(names))]], np.float32) * rng.uniform(0.35, 0.8)
    c2 = np.array(COLOURS[names[rng.integers(len(names))]], np.float32) * rng.uniform(0.35, 0.8)
    pan = rng.uniform(-0.06, 0.06, size=2)  # frames per second: a slow camera pan
    n = len(t)
    px = (pan[0] * t).astype(np.float32)[:, None, None]
    py = (pan[1] * t).astype(np.float32)[:, None, None]
    desc: dict[str, Any] = {"kind": kind, "pan": [round(float(p), 4) for p in pan]}
    if kind == "solid":
        return np.broadcast_to(c1, (n, size, size, 3)).copy(), desc
    if kind == "gradient":
        phi = rng.uniform(0, 2 * np.pi)
        a = 0.5 + 0.5 * np.sin(np.pi * ((x + px) * math.cos(phi) + (y + py) * math.sin(phi)))
    elif kind == "stripes":
        phi, freq = rng.uniform(0, np.pi), rng.uniform(2.5, 6.0)
        wave_ = np.sin(2 * np.pi * freq * ((x + px) * math.cos(phi) + (y + py) * math.sin(phi)))
        # Sharp stripes with about one pixel of anti-aliased edge.
        a = np.clip(0.5 + wave_ * size / (4 * np.pi * freq), 0.0, 1.0)
    elif kind == "noise":
        g = 5
        grid = rng.uniform(0, 1, size=(g, g)).astype(np.float32)
        gx, gy = np.mod((x + px) * g, g), np.mod((y + py) * g, g)
        ix, iy = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
        fx, fy = gx - ix, gy - iy
        fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)  # smooth interpolation
        jx, jy = (ix + 1) % g, (iy + 1) % g
        top = grid[iy, ix] * (1 - fx) + grid[iy, jx] * fx
        bottom = grid[jy, ix] * (1 - fx) + grid[jy, jx] * fx
        a = top * (1 - fy) + bottom * fy
    else:
        raise ValueError(f"unknown background {kind!r}; valid: {list(BACKGROUNDS)}")
    a = np.broadcast_to(a, (n, size, size)).astype(np.float32)[..., None]
    return c1 + (c2 - c1) * a, desc


def render_frames(factors: dict[str, Any], rng: np.random.Generator, size: int, fps: float, num_frames: int,
                  antialias: bool) -> np.ndarray:
    """Frames ``[T, H, W, 3]`` uint8 of a clip (background, optional distractor, the object)."""
    ss = 3 if antialias else 1
    t = np.arange(num_frames, dtype=np.float64) / fps
    canvas, bg = _background(rng, factors["background"], t, size)
    factors["background_params"] = bg
    dist = factors.get("distractor")
    if dist is not None:
        grey = np.full(3, dist["grey"], np.float32)
        dcx = _fold(dist["x0"] + dist["vx"] * t, 0.1, 0.9)
        dcy = _fold(dist["y0"] + dist["vy"] * t, 0.1, 0.9)
        _draw_shape(canvas, dist["shape"], dcx, dcy, np.full(num_frames, dist["radius"]),
                    np.full(num_frames, dist["angle"]), grey, None, ss)
    m = factors["motion_params"]
    cx, cy, scale, angle = motion_state(m, t)
    _draw_shape(canvas, factors["object"], cx, cy, m["radius"] * scale, angle,
                np.array(COLOURS[factors["colour"]], np.float32),
                np.array(COLOURS[factors["secondary_colour"]], np.float32), ss)
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Audio synthesis


def _midi_hz(m: float) -> float:
    return 440.0 * 2.0 ** ((m - 69.0) / 12.0)


def _env_ar(n: int, sr: int, attack: float, release: float) -> np.ndarray:
    """Attack-sustain-release envelope of ``n`` samples."""
    env = np.ones(n, np.float64)
    a, r = max(1, int(attack * sr)), max(1, int(release * sr))
    a, r = min(a, n), min(r, n)
    env[:a] = np.linspace(0.0, 1.0, a, endpoint=False)
    env[n - r:] *= np.linspace(1.0, 0.0, r)
    return env


def synth_note(timbre: str, freq: float, dur: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One note ``[n]`` float64 (peak about 1) of a timbre; percussive timbres decay on their own."""
    natural = {"marimba": 0.6, "drum": 0.45, "bell": 1.5, "pluck": 0.8, "click": 0.12}
    if timbre in natural:
        dur = min(dur, natural[timbre]) if dur > 0 else natural[timbre]
    n = max(2, int(dur * sr))
    t = np.arange(n) / sr
    two_pi_f = 2 * np.pi * freq
    if timbre == "marimba":
        y = sum(a * np.sin(two_pi_f * p * t) * np.exp(-d * t)
                for p, a, d in ((1.0, 1.0, 6.0), (3.93, 0.35, 14.0), (9.2, 0.1, 30.0)) if freq * p < sr / 2)
        y = y * np.minimum(1.0, t / 0.002)
    elif timbre == "drum":
        inst = freq * (1.0 + 0.6 * np.exp(-t / 0.015))
        ph = 2 * np.pi * np.cumsum(inst) / sr
        y = np.sin(ph) * np.exp(-12 * t) + 0.4 * np.sin(1.59 * ph) * np.exp(-18 * t)
        y = y + 0.5 * rng.standard_normal(n) * np.exp(-60 * t)
    elif timbre == "bell":
        y = sum(a * np.sin(two_pi_f * p * t) * np.exp(-d * t)
                for p, a, d in ((1.0, 1.0, 2.5), (2.0, 0.6, 3.5), (2.76, 0.4, 5.0), (5.4, 0.25, 8.0),
                                (8.93, 0.15, 12.0)) if freq * p < sr / 2)
        y = y * np.minimum(1.0, t / 0.002)
    elif timbre in ("flute", "string", "brass"):
        vib = 1.0 + (0.005 if timbre == "flute" else 0.006) * np.sin(2 * np.pi * rng.uniform(4.5, 6) * t)
        ph = 2 * np.pi * freq * np.cumsum(vib) / sr
        if timbre == "flute":
            env = _env_ar(n, sr, 0.04, 0.06)
            breath = rng.standard_normal(n)
            breath = breath - np.concatenate([[0.0], breath[:-1]])  # high-passed breath noise
            y = (np.sin(ph) + 0.2 * np.sin(2 * ph) + 0.05 * np.sin(3 * ph) + 0.08 * breath) * env
        elif timbre == "string":
            env = _env_ar(n, sr, 0.06, 0.08)
            y = sum(np.sin(h * ph) / h for h in range(1, 13) if freq * h < sr / 2) * env * 0.6
        else:
            env = _env_ar(n, sr, 0.05, 0.06)
            y = sum(env ** (1 + 0.5 * (h - 1)) * np.sin(h * ph) / h for h in (1, 3, 5, 7, 9) if freq * h < sr / 2)
    elif timbre == "pluck":  # Karplus-Strong, one delay-line period at a time
        period = max(2, int(round(sr / freq)))
        buf = rng.uniform(-1.0, 1.0, period)
        blocks = []
        for _ in range(n // period + 1):
            blocks.append(buf)
            buf = 0.996 * 0.5 * (buf + np.roll(buf, 1))
        y = np.concatenate(blocks)[:n]
    elif timbre == "click":
        y = rng.standard_normal(n) * np.exp(-200 * t) + np.sin(two_pi_f * 2 * t) * np.exp(-80 * t)
    else:
        raise ValueError(f"unknown timbre {timbre!r}; valid: {list(TIMBRE_WORDS)}")
    y = np.asarray(y, np.float64)
    peak = np.abs(y).max()
    return y / peak if peak > 0 else y


def _add(buf: np.ndarray, sig: np.ndarray, start: int) -> None:
    """Add ``sig`` into ``buf`` at sample ``start`` (either may stick out: cut)."""
    a, b = max(0, start), min(len(buf), start + len(sig))
    if a < b:
        buf[a:b] += sig[a - start: b - start]


def _pitches(rng: np.random.Generator, obj: ObjectClass, n: int, offset: float) -> np.ndarray:
    lo, hi = obj.pitch
    return rng.integers(lo, hi + 1, size=n) + offset


def synth_audio(factors: dict[str, Any], rng: np.random.Generator, duration: float, sr: int) -> np.ndarray:
    """Mono audio ``[S]`` float32 of a clip: notes at the motion events, off-screen sound, noise/hum.

    Writes the sound onsets (seconds, within the clip) into ``factors["onsets"]``.
    """
    num = int(round(duration * sr))
    sig = np.zeros(num, np.float64)
    obj = OBJECTS[OBJECT_NAMES.index(factors["object"])]
    timbre = factors["timbre"]
    m = factors["motion_params"]
    offset = factors["pitch_offset"]
    # A note at every motion event: impacts, turns, half-turns, quarter-laps, pulse maxima. Shake gives
    # fast repeated notes of one pitch (a tremolo); slide gives notes sustained over each traversal.
    cycle = 1.0 / (m["rate"] * m["events_per_cycle"])
    if m["name"] == "slide" or (m["name"] == "shake" and timbre in ("flute", "string", "brass")):
        note_dur = cycle
    elif timbre in ("flute", "string", "brass"):
        note_dur = min(0.35, 0.9 * cycle)
    else:
        note_dur = min(cycle, 0.25) if m["name"] == "shake" else 0.0  # 0: the timbre's natural decay
    events = motion_events(m, -2.0, duration)  # notes that started before the clip still ring into it
    pitches = _pitches(rng, obj, len(events), offset)
    if m["name"] == "shake":
        pitches[:] = pitches[0]
    vel = rng.uniform(0.6, 1.0, size=len(events))
    for te, p, v in zip(events, pitches, vel):
        _add(sig, v * synth_note(timbre, _midi_hz(p), note_dur, sr, rng), int(round(te * sr)))
    onsets = events[events >= 0.0]
    factors["onsets"] = [round(float(x), 6) for x in onsets]
    if factors.get("offscreen") is not None:
        other = OBJECTS[OBJECT_NAMES.index(factors["offscreen"])]
        times = np.sort(rng.uniform(0, duration, size=int(rng.integers(1, 4))))
        gain = rng.uniform(0.3, 0.6)
        for te, p in zip(times, _pitches(rng, other, len(times), 0)):
            _add(sig, gain * synth_note(other.timbre, _midi_hz(p), 0.3, sr, rng), int(round(te * sr)))
    if factors.get("speech_audio") is not None:
        sig += factors.pop("speech_audio")[:num]
    rms = float(np.sqrt(np.mean(sig**2))) if num else 0.0
    noise = _noise(rng, factors["noise"], num, sr)
    n_rms = float(np.sqrt(np.mean(noise**2))) if num else 0.0
    if rms > 0 and n_rms > 0:
        sig += noise * (rms / n_rms) * 10 ** (-factors["snr_db"] / 20)
    peak = float(np.abs(sig).max()) if num else 0.0
    if peak > 0:
        sig *= 0.8 / peak
    return sig.astype(np.float32)


def _noise(rng: np.random.Generator, kind: str, n: int, sr: int) -> np.ndarray:
    if kind == "hum":
        t = np.arange(n) / sr
        f0 = 50.0 if rng.uniform() < 0.5 else 60.0
        return sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h for h in (1, 2, 3, 4))
    white = rng.standard_normal(n)
    spec = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    spec[1:] /= np.sqrt(freqs[1:] / freqs[1])  # pink: 1/f power
    spec[0] = 0.0
    return np.fft.irfft(spec, n)


# ---------------------------------------------------------------------------------------------
# Speech (optional espeak-ng)


def espeak_available() -> bool:
    """Whether the ``espeak-ng`` binary is on PATH."""
    return shutil.which("espeak-ng") is not None


def speak(text: str, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Speech ``[n]`` float64 of ``text`` by espeak-ng (random voice variant, rate, pitch), at ``sr`` Hz."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ValueError("speech=True needs the espeak-ng binary on PATH (Debian: apt-get install espeak-ng)")
    variant = ["m1", "m2", "m3", "m4", "f1", "f2", "f3", "f4"][int(rng.integers(8))]
    rate, pitch = int(rng.integers(140, 201)), int(rng.integers(30, 71))
    proc = subprocess.run([exe, "-v", f"en+{variant}", "-s", str(rate), "-p", str(pitch), "--stdout", text],
                          capture_output=True, check=False, timeout=30)
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(f"espeak-ng failed on {text!r}: {proc.stderr.decode(errors='replace')[:200]}")
    with wave.open(io.BytesIO(proc.stdout)) as w:
        src_sr, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
        raw = w.readframes(w.getnframes())
    if width != 2:
        raise RuntimeError(f"espeak-ng wrote {8 * width}-bit audio; expected 16-bit")
    x = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
    x = x.reshape(-1, channels).mean(axis=1)
    if src_sr != sr and len(x) > 1:
        n_out = int(round(len(x) * sr / src_sr))
        x = np.interp(np.arange(n_out) * (src_sr / sr), np.arange(len(x)), x)
    return x


# ---------------------------------------------------------------------------------------------
# Text


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _choice(rng: np.random.Generator, items: Sequence[str]) -> str:
    return items[int(rng.integers(len(items)))]


def make_caption(rng: np.random.Generator, obj: str, motion: str, colour: str, background: str,
                 unseen_synonyms: bool = False) -> str:
    """A clean caption, e.g. "a pink rhombus vibrates on a striped background".

    With ``unseen_synonyms`` the noun and verb are the classes' rare synonyms, never used in
    narration.
    """
    o, m = OBJECTS[OBJECT_NAMES.index(obj)], MOTIONS[MOTION_NAMES.index(motion)]
    noun = o.rare_noun if unseen_synonyms else _choice(rng, o.nouns)
    verb = m.rare_verb if unseen_synonyms else _choice(rng, m.verbs)
    bg = _choice(rng, BACKGROUND_WORDS[background])
    where = _choice(rng, ("on", "in front of"))
    return f"{_article(colour)} {colour} {noun} {verb} {where} {_article(bg)} {bg} background"


def _describe(rng: np.random.Generator, factors: dict[str, Any], opts: GeneratorOptions) -> str:
    o = OBJECTS[OBJECT_NAMES.index(factors["object"])]
    m = MOTIONS[MOTION_NAMES.index(factors["motion"])]
    words = [_choice(rng, OPENERS)]
    if rng.uniform() < 0.4:
        words.append(_choice(rng, FILLERS))
    words += ["the", factors["colour"], _choice(rng, o.nouns), _choice(rng, m.verbs)]
    if rng.uniform() < opts.p_sound_word:
        words += ["and", "you", "can", "hear", _choice(rng, TIMBRE_WORDS[factors["timbre"]])]
    return " ".join(words)


def _asr(rng: np.random.Generator, text: str, dropout: float) -> str:
    words = text.lower().split()
    kept = [w for w in words if rng.uniform() >= dropout]
    return " ".join(kept if kept else words[:1])


def make_narration(rng: np.random.Generator, factors: dict[str, Any], duration: float,
                   opts: GeneratorOptions) -> list[dict[str, Any]]:
    """ASR-style segments ``[{"start", "end", "text", "mode"}]`` with alignment noise (raw times)."""
    segments: list[dict[str, Any]] = []
    n_seg = 1 + int(rng.uniform() < opts.p_second_segment)
    cursor = 0.0
    for k in range(n_seg):
        if k > 0 and cursor > duration - 0.5:
            break  # no room left in the clip for another segment
        u = rng.uniform()
        mode = "aligned" if u < opts.p_aligned else "shifted" if u < opts.p_aligned + opts.p_shifted else "unrelated"
        text = _choice(rng, CHITCHAT) if mode == "unrelated" else _describe(rng, factors, opts)
        text = _asr(rng, text, opts.word_dropout)
        length = len(text.split()) / rng.uniform(2.2, 3.2)  # speaking rate, words per second
        if mode == "unrelated":
            start = rng.uniform(-1.0, duration)
        else:
            start = cursor + rng.uniform(-0.3, 0.5)
            if mode == "shifted":
                start += float(rng.choice([-1, 1])) * rng.uniform(1.0, 3.0)
        cursor = max(cursor, start + length + rng.uniform(0.1, 0.5))
        segments.append({"start": round(float(start), 3), "end": round(float(start + length), 3), "text": text,
                         "mode": mode})
    return segments


def manifest_segments(segments: list[dict[str, Any]], duration: float,
                      min_len: float = 0.25) -> list[dict[str, Any]]:
    """Segments for a manifest: times clamped to the video ``[0, duration]``, at least ``min_len`` long.

    A segment that lies wholly outside the video is moved to the nearest edge (it stays misaligned).
    """
    out = []
    min_len = min(min_len, duration / 2)
    for s in segments:
        start = min(max(s["start"], 0.0), duration - min_len)
        end = max(min(s["end"], duration), start + min_len)
        out.append({"start": round(start, 3), "end": round(min(end, duration), 3), "text": s["text"]})
    return out


# ---------------------------------------------------------------------------------------------
# Clips


@dataclass
class SyntheticClip:
    """One generated clip in memory."""

    frames: np.ndarray
    """``[T, H, W, 3]`` uint8 RGB."""
    audio: np.ndarray
    """``[S]`` float32 mono in [-1, 1], ``S = T / fps * sample_rate``."""
    sample_rate: int
    fps: float
    narration: list[dict[str, Any]]
    """ASR segments ``{"start", "end", "text", "mode"}``, raw times in seconds (may lie outside the clip)."""
    caption: str
    """Clean caption (MSRVTT-like)."""
    labels: dict[str, Any]
    """Latent factors: object, motion, colour, background, distractor, speed, offscreen, onsets, ..."""
    captions: list[str] = field(default_factory=list)
    """Further independently drawn captions (retrieval clips)."""

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames.shape[0] / self.fps


def _check_clip_args(size: int, fps: float, duration: tuple[float, float], sample_rate: int) -> None:
    if size < 8 or size % 2:
        raise ValueError(f"size must be even and >= 8 (H.264 yuv420p), got {size}")
    if fps <= 0 or sample_rate < 4000:
        raise ValueError(f"fps must be > 0 and sample_rate >= 4000, got fps={fps}, sample_rate={sample_rate}")
    if len(duration) != 2 or not 0 < duration[0] <= duration[1]:
        raise ValueError(f"duration must be (low, high) seconds with 0 < low <= high, got {duration}")


def make_clip(index: int, seed: int, split: str = "pretrain", size: int = 64, fps: float = 16.0,
              duration: tuple[float, float] = (2.0, 4.0), sample_rate: int = 16000,
              options: GeneratorOptions | None = None, combos: Sequence[tuple[str, str]] | None = None,
              num_captions: int = 1, unseen_synonyms: bool = False) -> SyntheticClip:
    """Generate clip ``index`` of ``split`` for set ``seed``, in memory (no encoding).

    ``combos`` are the allowed (object, motion) pairs; by default :func:`split_combinations`
    (pretraining draws at random among the non-held-out pairs, the other splits cycle through their
    pairs so classes are balanced). Frames ``[T, size, size, 3]`` uint8 with ``T = round(D * fps)``
    for a duration D drawn from ``duration``; audio ``[T / fps * sample_rate]`` float32.
    """
    opts = options or GeneratorOptions()
    _check_clip_args(size, fps, duration, sample_rate)
    if num_captions < 1:
        raise ValueError(f"num_captions must be >= 1, got {num_captions}")
    cseed = clip_seed(seed, split, index)
    rng = np.random.default_rng(cseed)
    if combos is None:
        pool = split_combinations(seed, split)
        cycle = split != "pretrain"
    else:
        pool, cycle = list(combos), False
        bad = [c for c in pool if c[0] not in OBJECT_NAMES or c[1] not in MOTION_NAMES]
        if bad or not pool:
            raise ValueError(f"combos must be a non-empty list of (object, motion) pairs; bad: {bad}")
    obj_name, motion_name = pool[index % len(pool)] if cycle else pool[int(rng.integers(len(pool)))]
    obj = OBJECTS[OBJECT_NAMES.index(obj_name)]

    num_frames = max(1, int(round(rng.uniform(*duration) * fps)))
    dur = num_frames / fps
    if rng.uniform() < opts.palette_prob:
        colour, secondary = obj.palette if rng.uniform() < 0.5 else obj.palette[::-1]
    else:
        names = list(COLOURS)
        colour, secondary = (names[i] for i in rng.choice(len(names), size=2, replace=False))
    timbre = obj.timbre
    if rng.uniform() < opts.p_alt_timbre:
        timbre = OBJECTS[(OBJECT_NAMES.index(obj_name) + 3) % 8].timbre
    factors: dict[str, Any] = {
        "object": obj_name, "motion": motion_name, "colour": colour, "secondary_colour": secondary,
        "timbre": timbre, "background": _choice(rng, opts.backgrounds),
        "motion_params": _draw_motion(rng, motion_name, opts),
        "pitch_offset": float(rng.uniform(-1.5, 1.5)),
        "noise": "hum" if rng.uniform() < 0.3 else "pink", "snr_db": float(rng.uniform(*opts.snr_db)),
    }
    factors["speed"] = factors["motion_params"]["speed"]
    factors["distractor"] = None
    if rng.uniform() < opts.p_distractor:
        factors["distractor"] = {
            "shape": _choice(rng, OBJECT_NAMES), "grey": float(rng.uniform(100, 160)),
            "radius": float(rng.uniform(0.06, 0.1)), "x0": float(rng.uniform(0.1, 0.9)),
            "y0": float(rng.uniform(0.1, 0.9)), "vx": float(rng.uniform(-0.1, 0.1)),
            "vy": float(rng.uniform(-0.1, 0.1)), "angle": float(rng.uniform(0, 2 * np.pi)),
        }
    factors["offscreen"] = None
    if rng.uniform() < opts.p_offscreen:
        factors["offscreen"] = _choice(rng, [o for o in OBJECT_NAMES if o != obj_name])

    # Independent streams for the parts, so switching one part (e.g. speech) leaves the others unchanged.
    text_rng, video_rng, audio_rng, speech_rng = (np.random.default_rng(s) for s in
                                                  np.random.SeedSequence(cseed).spawn(4))
    narration: list[dict[str, Any]] = []
    if text_rng.uniform() >= opts.p_no_narration:
        narration = make_narration(text_rng, factors, dur, opts)
    caps = [make_caption(text_rng, obj_name, motion_name, colour, factors["background"], unseen_synonyms)
            for _ in range(num_captions)]
    factors["narration_mode"] = narration[0]["mode"] if narration else "none"  # the main segment's mode
    narration.sort(key=lambda seg: seg["start"])  # chronological, as ASR output

    if opts.speech and narration:
        speech = np.zeros(int(round(dur * sample_rate)), np.float64)
        for seg in narration:
            voice = speak(seg["text"], sample_rate, speech_rng)
            _add(speech, speech_rng.uniform(0.5, 1.0) * voice, int(round(seg["start"] * sample_rate)))
            seg["end"] = round(seg["start"] + len(voice) / sample_rate, 3)  # the spoken length
        factors["speech_audio"] = speech
    factors["speech"] = bool(opts.speech and narration)

    frames = render_frames(factors, video_rng, size, fps, num_frames, opts.antialias)
    audio = synth_audio(factors, audio_rng, dur, sample_rate)
    factors.update({"split": split, "index": index, "clip_seed": cseed, "duration": dur,
                    "num_frames": num_frames, "fps": fps, "sample_rate": sample_rate})
    return SyntheticClip(frames=frames, audio=audio, sample_rate=sample_rate, fps=fps, narration=narration,
                         caption=caps[0], labels=factors, captions=caps)


# ---------------------------------------------------------------------------------------------
# Writing files


def write_mp4(path: str | Path, frames: np.ndarray, audio: np.ndarray | None, fps: float, sample_rate: int,
              crf: int = 20) -> None:
    """Encode ``frames [T, H, W, 3]`` uint8 as H.264 yuv420p and ``audio [S]`` float32 as AAC mono, with PyAV."""
    import av

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 yuv420p needs even frame sizes, got {h}x{w}")
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w", format="mp4") as container:
        vs = container.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        # zerolatency (no B-frames, lookahead or macroblock tree): without it the same frames encoded to different
        # streams from run to run, so a data set written twice from one seed differed.
        vs.options = {"crf": str(crf), "preset": "veryfast", "tune": "zerolatency"}
        stream_a = None
        if audio is not None:
            stream_a = container.add_stream("aac", rate=sample_rate)
            stream_a.layout = "mono"
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            frame.pts = i
            frame.time_base = 1 / rate
            container.mux(vs.encode(frame))
        container.mux(vs.encode(None))
        if stream_a is not None:
            assert audio is not None
            a = np.ascontiguousarray(np.clip(audio, -1.0, 1.0), dtype=np.float32)
            step = 1024
            for s in range(0, len(a), step):
                af = av.AudioFrame.from_ndarray(a[None, s: s + step], format="fltp", layout="mono")
                af.sample_rate = sample_rate
                af.pts = s
                af.time_base = Fraction(1, sample_rate)
                container.mux(stream_a.encode(af))
            container.mux(stream_a.encode(None))


def _sidecar(clip: SyntheticClip, video: str) -> dict[str, Any]:
    return {"video": video, "caption": clip.caption, "captions": clip.captions, "narration": clip.narration,
            "labels": clip.labels}


def _job(args: tuple[str, int, int, str, dict[str, Any]]) -> dict[str, Any]:
    """Worker: make one clip, write its mp4 and sidecar, return its sidecar."""
    split, index, seed, out_dir, kw = args
    kw = dict(kw)
    opts = GeneratorOptions(**kw.pop("options"))
    clip = make_clip(index, seed, split=split, options=opts, **kw)
    name = f"clip_{index:06d}" if split == "pretrain" else f"{split}_{index:06d}"
    write_mp4(Path(out_dir) / f"{name}.mp4", clip.frames, clip.audio, clip.fps, clip.sample_rate)
    side = _sidecar(clip, f"{name}.mp4")
    (Path(out_dir) / f"{name}.json").write_text(json.dumps(side, indent=1) + "\n")
    return side


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_dataset(out_dir: str | Path, num_clips: int, seed: int, size: int = 64, fps: float = 16.0,
                  duration: tuple[float, float] = (2.0, 4.0), sample_rate: int = 16000, workers: int = 2,
                  speech: bool = False, num_probe_train: int | None = None, num_probe_test: int | None = None,
                  num_retrieval: int | None = None, options: GeneratorOptions | None = None,
                  unseen_synonyms: bool = False, num_captions: int = 2, progress: bool = False) -> dict[str, Any]:
    """Write a synthetic data set into ``out_dir`` and return a summary (``progress``: a bar of the clips
    written, on a terminal; :mod:`mmv_torch.progress`).

    Files (paths in manifests are relative to ``out_dir``):

    - ``clip_NNNNNN.mp4`` (``num_clips`` pretraining clips), ``probe_train_NNNNNN.mp4``,
      ``probe_test_NNNNNN.mp4``, ``retrieval_NNNNNN.mp4``; each with a ``.json`` sidecar of its labels.
    - ``pretrain.jsonl``: ``{"video", "duration", "narration": [{"start", "end", "text"}]}`` per line,
      labels hidden, ``narration`` absent for the clips without one (times clamped to the video, see
      :func:`manifest_segments`); no held-out object x motion combination.
    - ``probe_motion.jsonl`` ``{"video", "label": motion, "split"}`` and ``probe_sound.jsonl``
      ``{"audio", "label": object (sound class), "split"}``; train and test clips use disjoint seeds.
    - ``retrieval.jsonl``: ``{"video", "captions": [...]}`` on the held-out combinations only.
    - ``labels.json``: class lists, held-out combinations, counts and generator settings.

    Defaults: ``num_probe_train = num_clips // 2``, ``num_probe_test = num_clips // 4``,
    ``num_retrieval = num_clips // 8``. ``workers`` processes encode in parallel (<= 1: in process).
    """
    import concurrent.futures
    import multiprocessing

    if num_clips < 0:
        raise ValueError(f"num_clips must be >= 0, got {num_clips}")
    opts = options or GeneratorOptions()
    if speech:
        opts = GeneratorOptions(**{**_options_dict(opts), "speech": True})
    if opts.speech and not espeak_available():
        raise ValueError("speech=True needs the espeak-ng binary on PATH (Debian: apt-get install espeak-ng)")
    counts = {
        "pretrain": num_clips,
        "probe_train": num_clips // 2 if num_probe_train is None else num_probe_train,
        "probe_test": num_clips // 4 if num_probe_test is None else num_probe_test,
        "retrieval": num_clips // 8 if num_retrieval is None else num_retrieval,
    }
    for k, v in counts.items():
        if v < 0:
            raise ValueError(f"number of {k} clips must be >= 0, got {v}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_clip_args(size, fps, duration, sample_rate)  # here, so that no worker fails on them
    base = {"size": size, "fps": fps, "duration": tuple(duration), "sample_rate": sample_rate}
    jobs = []
    for split in SPLITS:
        for i in range(counts[split]):
            kw = {**base, "options": _options_dict(opts)}
            if split == "retrieval":
                kw.update(num_captions=num_captions, unseen_synonyms=unseen_synonyms)
            jobs.append((split, i, seed, str(out), kw))
    t0 = time.perf_counter()
    from mmv_torch.progress import bar

    if workers <= 1 or len(jobs) <= 1:
        results = [_job(j) for j in bar(jobs, requested=progress, desc="synthetic", unit="clip")]
    else:
        # fork where the platform has it: the workers then skip re-importing the package (and torch),
        # which costs more than writing a small data set. They use only numpy and PyAV.
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods and sys.platform == "linux" else "spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            results = list(bar(pool.map(_job, jobs, chunksize=max(1, len(jobs) // (8 * workers))), total=len(jobs),
                               requested=progress, desc="synthetic", unit="clip"))
    seconds = time.perf_counter() - t0

    by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for r in results:
        by_split[r["labels"]["split"]].append(r)
    pre = []
    for r in by_split["pretrain"]:
        row: dict[str, Any] = {"video": r["video"], "duration": r["labels"]["duration"]}
        if r["narration"]:
            row["narration"] = manifest_segments(r["narration"], r["labels"]["duration"])
        pre.append(row)
    _write_jsonl(out / "pretrain.jsonl", pre)
    motion_rows, sound_rows = [], []
    for split in ("probe_train", "probe_test"):
        tag = split.split("_")[1]
        for r in by_split[split]:
            motion_rows.append({"video": r["video"], "label": r["labels"]["motion"], "split": tag})
            sound_rows.append({"audio": r["video"], "label": r["labels"]["object"], "split": tag})
    _write_jsonl(out / "probe_motion.jsonl", motion_rows)
    _write_jsonl(out / "probe_sound.jsonl", sound_rows)
    _write_jsonl(out / "retrieval.jsonl", [{"video": r["video"], "captions": r["captions"]}
                                           for r in by_split["retrieval"]])
    summary = {
        "objects": list(OBJECT_NAMES), "motions": list(MOTION_NAMES), "sound_classes": list(OBJECT_NAMES),
        "timbres": {o.name: o.timbre for o in OBJECTS}, "colours": list(COLOURS),
        "backgrounds": list(BACKGROUNDS),
        "heldout_combinations": [list(c) for c in heldout_combinations(seed)],
        "generator_version": GENERATOR_VERSION, "counts": counts, "seed": seed, "size": size, "fps": fps,
        "duration": list(duration),
        "sample_rate": sample_rate, "options": _options_dict(opts), "unseen_synonyms": unseen_synonyms,
        "manifests": {"pretrain": "pretrain.jsonl", "probe_motion": "probe_motion.jsonl",
                      "probe_sound": "probe_sound.jsonl", "retrieval": "retrieval.jsonl"},
    }
    (out / "labels.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "classnames.json").write_text(json.dumps(class_phrases(), indent=1) + "\n")
    return {**summary, "out_dir": str(out), "seconds": round(seconds, 3), "num_files": len(results)}


def _options_dict(opts: GeneratorOptions) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)}
