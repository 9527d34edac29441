"""``--data`` specs -> :class:`~mmv_torch.train.sampling.TrainData`.

A spec is a pretraining JSONL manifest, a folder holding ``pretrain.jsonl``, a folder of WebDataset
``.tar`` shards, or ``synthetic`` / ``synthetic:N`` (clips generated once into the run folder);
``PATH@W`` weights a manifest when mixing. :func:`build_train_data` reads them, builds the text
vocabulary of their narrations and returns the dataset with its sources.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from mmv_torch import dist
from mmv_torch.config import Config
from mmv_torch.fileio import atomic_write_text
from mmv_torch.train.sampling import TrainData, TrainSource, refuse_repeated_stream
from mmv_torch.weights.folder import VOCAB_FILE, read_words

SYNTHETIC_CLIPS = 256
"""Clips generated for ``--data synthetic`` (``synthetic:N`` asks for N)."""


def parse_data_spec(spec: str) -> tuple[str, float]:
    """``"PATH"`` or ``"PATH@WEIGHT"`` -> ``(PATH, weight)`` (weight 1 by default)."""
    path, sep, tail = spec.rpartition("@")
    if sep:
        try:
            weight = float(tail)
        except ValueError:
            return spec, 1.0  # an '@' inside a path
        if not weight > 0:
            raise ValueError(f"--data {spec!r}: the weight after '@' must be > 0")
        return path, weight
    return spec, 1.0


def synthetic_manifest(spec: str, cfg: Config, run_dir: Path) -> Path:
    """Generate (rank 0, once) a synthetic narrated-video set in ``run_dir/synthetic``; its manifest."""
    _, _, count = spec.partition(":")
    try:
        num = int(count) if count else SYNTHETIC_CLIPS
    except ValueError:
        raise ValueError(f"--data {spec!r}: expected 'synthetic' or 'synthetic:N' with N clips") from None
    out = run_dir / "synthetic"
    manifest = out / "pretrain.jsonl"
    d = cfg.data
    span = d.num_frames / d.fps
    settings = {"num_clips": num, "seed": cfg.train.seed, "size": d.resize_short, "fps": d.fps,
                "duration": [max(2.0, 1.5 * span), max(4.0, 3.0 * span)]}
    stamp = out / "train_settings.json"
    fresh = manifest.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == settings
    if dist.is_main() and not fresh:
        from mmv_torch.data.synthetic import write_dataset

        print(f"generating {num} synthetic clips into {out}", file=sys.stderr)
        write_dataset(out, num, settings["seed"], size=settings["size"], fps=settings["fps"],
                      duration=tuple(settings["duration"]), sample_rate=d.sample_rate, num_probe_train=0,
                      num_probe_test=0, num_retrieval=0)
        atomic_write_text(stamp, json.dumps(settings) + "\n")
    dist.barrier()
    return manifest


def _manifest_of(path: str) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir() and (p / "pretrain.jsonl").is_file():
        return p / "pretrain.jsonl"
    if p.is_dir():
        raise ValueError(f"--data {path}: a folder without pretrain.jsonl or .tar shards")
    raise ValueError(f"--data {path}: no such manifest file or folder (or use 'synthetic')")


def _is_shard_folder(path: str) -> bool:
    p = Path(path)
    return p.is_dir() and not (p / "pretrain.jsonl").is_file() and any(p.glob("*.tar"))


def _shard_narrations(shards: Sequence[str]) -> tuple[int, list[str]]:
    """Number of samples (``.json`` members) in the shards and the texts of their narrations."""
    import tarfile

    count, texts = 0, []
    for shard in shards:
        try:
            with tarfile.open(shard, "r:*") as tar:
                for member in tar:
                    if member.isfile() and member.name.endswith(".json"):
                        count += 1
                        f = tar.extractfile(member)
                        meta = json.loads(f.read()) if f is not None else {}
                        texts += [seg.get("text", "") for seg in meta.get("narration") or []]
        except (tarfile.TarError, OSError, ValueError) as e:
            raise ValueError(f"--data: cannot read shard {shard}: {e}") from e
    return count, texts


def build_train_data(specs: Sequence[str], cfg: Config, run_dir: str | Path) -> TrainData:
    """The training data named by ``--data`` specs, with its text vocabulary.

    Each spec is a pretraining JSONL manifest, a folder holding ``pretrain.jsonl``, ``synthetic``
    (``synthetic:N``): N clips (default :data:`SYNTHETIC_CLIPS`) generated once into
    ``run_dir/synthetic`` at ``cfg.data`` frame rate and ``resize_short`` size, or a folder of
    WebDataset ``.tar`` shards (``data/shards.py``; streamed through :class:`ShardBatches`, not mixable
    with manifests). ``PATH@W`` gives a manifest weight W for mixing (default 1 each: each source's
    share of an epoch is W / sum(W)).
    The vocabulary holds the words of all narrations that ``cfg.data.word_vectors`` knows and the words
    among its first ``cfg.data.extra_vocab_words`` rows, with their vectors (float32 ``[V, word_dim]``,
    row 0 the zero padding vector); when ``run_dir/vocab.txt`` exists (a resumed run) it must be the same
    word list.
    """
    from mmv_torch.data.datasets import PretrainDataset
    from mmv_torch.data.media.batch_augment import collate_samples
    from mmv_torch.data.text.tokenizer import Tokenizer
    from mmv_torch.data.text.wordvec import check_word_vectors, vocabulary_for_sentences

    if not specs:
        raise ValueError("--data needs at least one manifest, folder or 'synthetic'")
    check_word_vectors(cfg.data.word_vectors)  # before clips are generated or decoded
    run_dir = Path(run_dir)
    parsed = [parse_data_spec(spec) for spec in specs]
    shard_folders = [path for path, _ in parsed if _is_shard_folder(path)]
    manifests: list[Path] = []
    weights = [w for _, w in parsed]
    if shard_folders:
        if len(shard_folders) != len(parsed) or any(w != 1.0 for w in weights):
            raise ValueError("--data: shard folders cannot be mixed with manifests or weighted; give only "
                             "shard folders (their samples are drawn uniformly)")
        refuse_repeated_stream(cfg)  # before anything is written to the run folder
        from mmv_torch.data.shards import ShardDataset, expand_shards

        shards = expand_shards(shard_folders)
        total, sentences = _shard_narrations(shards)
        if total == 0:
            raise ValueError(f"--data {shard_folders}: the shards hold no samples")
    else:
        for path, _ in parsed:
            synthetic = path == "synthetic" or path.startswith("synthetic:")
            manifests.append(synthetic_manifest(path, cfg, run_dir) if synthetic else _manifest_of(path))
        # Each manifest is read (and its narration problems logged) once: the vocabulary comes from the entries.
        pre = PretrainDataset([str(m) for m in manifests], cfg.data, weights=weights, train=True, seed=cfg.train.seed)
        sentences = [seg.text for e in pre.entries for seg in e.narrations]

    vocab = vocabulary_for_sentences(sentences, cfg.data.word_vectors, extra_words=cfg.data.extra_vocab_words)
    saved, words = run_dir / VOCAB_FILE, read_words(run_dir)
    if words is not None and words != vocab.words:
        raise ValueError(f"the vocabulary of the --data narrations differs from {saved} of this run; "
                         "resume with the same data")
    tokenize = Tokenizer(vocab, max_words=cfg.data.max_words).encode

    t = cfg.train
    dataset: Dataset
    if shard_folders:
        streams = dist.world_size() * max(1, t.num_workers)
        per_worker = t.batch_size * max(1, -(-total // (streams * t.batch_size)))
        dataset = ShardDataset(shards, cfg.data, tokenize, train=True, resample=True, num_samples=per_worker,
                               seed=t.seed)
        sources = [TrainSource(",".join(shard_folders), 0, total)]
    else:
        pre.tokenize = tokenize
        bounds = zip(pre.bounds, pre.bounds[1:])
        sources = [TrainSource(str(m), a, b - a, w) for m, (a, b), w in zip(manifests, bounds, weights)]
        empty = [src.name for src in sources if src.length == 0]
        if empty:
            raise ValueError(f"--data: the manifests {empty} list no videos")
        dataset = pre
    info = {"specs": list(specs), "num_clips": sum(src.length for src in sources), "vocab_size": len(vocab),
            "num_sentences": len(sentences)}
    if not shard_folders:
        info["narrations"] = narration_issue_counts(pre.entries)
    return TrainData(dataset, sources, list(vocab.words), vocab.vectors_tensor().clone(), info,
                     collate_samples)


def narration_issue_counts(entries: Sequence[Any]) -> dict[str, Any]:
    """Narrations the manifests' validation dropped and clamped, summed over ``entries``
    (:class:`~mmv_torch.data.manifests.VideoEntry`): ``{"dropped", "clamped", "reasons", "videos"}``."""
    dropped = clamped = videos = 0
    reasons: dict[str, int] = {}
    for e in entries:
        if e.issues:
            videos += 1
            dropped, clamped = dropped + len(e.issues.dropped), clamped + len(e.issues.clamped)
            for k, v in e.issues.reasons().items():
                reasons[k] = reasons.get(k, 0) + v
    return {"dropped": dropped, "clamped": clamped, "reasons": dict(sorted(reasons.items())), "videos": videos}
