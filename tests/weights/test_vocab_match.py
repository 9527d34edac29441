"""``mmv-torch vocab match``: the word of every row of a frozen word table, from a word-vector source."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from mmv_torch.cli.main import main
from mmv_torch.data.text.dmvr import dmvr_tokenizer, load_vocabulary_file
from mmv_torch.data.text.wordvec import iter_word_vectors, read_word2vec_binary
from mmv_torch.weights.vocab_match import (
    RowIndex,
    match_vocabulary,
    open_vector_source,
    run_vocab_match,
    write_vocabulary,
)


def write_w2v_binary(path: Path, words: list[str], vectors: np.ndarray) -> Path:
    with open(path, "wb") as f:
        f.write(f"{len(words)} {vectors.shape[1]}\n".encode())
        for w, v in zip(words, vectors):
            f.write(w.encode() + b" " + np.asarray(v, "<f4").tobytes() + b"\n")
    return path


def write_w2v_text(path: Path, words: list[str], vectors: np.ndarray, header: bool = True, fmt: str = "%r") -> Path:
    lines = [f"{len(words)} {vectors.shape[1]}"] if header else []
    lines += [w + " " + " ".join(fmt % float(x) for x in v) for w, v in zip(words, vectors)]
    path.write_text("\n".join(lines) + "\n")
    return path


def source_and_table(n_source: int = 300, dim: int = 24, seed: int = 0):
    """Source words and vectors, and a table: a zero row 0, then source rows in shuffled order, and two rows
    that are in no source (unmatched)."""
    rng = np.random.default_rng(seed)
    words = [f"word{i}" for i in range(n_source)]
    vectors = rng.standard_normal((n_source, dim)).astype(np.float32)
    picked = rng.permutation(n_source)[:120]
    table = np.concatenate([np.zeros((1, dim), np.float32), vectors[picked],
                            rng.standard_normal((2, dim)).astype(np.float32)])
    expected = ["<pad>"] + [words[i] for i in picked] + ["<unmatched-121>", "<unmatched-122>"]
    return words, vectors, table, expected


# ---------------------------------------------------------------------------------------------
# A trained tiny model's export


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory) -> Path:
    """export/ of a 1-step tiny run on 8 synthetic clips; its word table comes from the bundled GloVe 50-d."""
    from mmv_torch.config import apply_overrides, get_preset
    from mmv_torch.data.synthetic import write_dataset
    from mmv_torch.train.loop import train

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = tmp_path_factory.mktemp("syn")
        write_dataset(data, 8, seed=0, size=36, fps=8.0, duration=(1.5, 2.0), workers=1, num_probe_train=0,
                      num_probe_test=0, num_retrieval=0)
        cfg = apply_overrides(get_preset("tiny"), {
            "train.batch_size": 4, "train.steps": 1, "train.warmup_steps": 1, "train.ckpt_every": 1,
            "train.num_workers": 0, "data.num_frames": 8, "data.fps": 8.0, "data.crop_size": 32,
            "data.resize_short": 36, "data.audio_seconds": 0.5})
        out = train(cfg, [str(data)], tmp_path_factory.mktemp("run") / "run", tensorboard=False, progress=False)
    finally:
        torch.set_num_threads(n)
    return Path(out["export"])


def test_recovers_the_word_list_of_a_trained_model(tiny_export, tmp_path, capsys):
    out, report = tmp_path / "vocab.txt", tmp_path / "match.json"
    assert main(["vocab", "match", "--checkpoint", str(tiny_export), "--out", str(out), "--json", str(report)]) == 0
    expected = (tiny_export / "vocab.txt").read_text().splitlines()
    words, kind = load_vocabulary_file(out)
    assert words == expected and len(words) > 10
    assert kind == "word-list"  # the table has no <bos> / <eos> / <unk> rows
    assert out.read_text().splitlines()[:2] == [f"0 {expected[0]}", f"1 {expected[1]}"]
    r = json.loads(report.read_text())
    assert r["match_rate"] == 1.0 and r["exact"] == len(words) - 1 and r["unmatched"] == []
    assert r["special"] == [{"row": 0, "name": "<pad>", "why": "all zeros"}]
    assert "matched" in capsys.readouterr().out


def test_same_words_with_unrelated_vectors_are_refused(tiny_export, tmp_path, capsys):
    words = (tiny_export / "vocab.txt").read_text().splitlines()[1:]
    fake = write_w2v_text(tmp_path / "fake.txt", words,
                          np.random.default_rng(1).standard_normal((len(words), 50)).astype(np.float32))
    out, report = tmp_path / "vocab.txt", tmp_path / "match.json"
    code = main(["vocab", "match", "--checkpoint", str(tiny_export), "--vectors", str(fake), "--out", str(out),
                 "--json", str(report)])
    assert code == 1
    err = capsys.readouterr().err
    assert "refused" in err and "below --min-match 0.9" in err and "nothing written" in err
    assert not out.exists() and not report.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["fake.txt"]  # no temporary file left either


# ---------------------------------------------------------------------------------------------
# Sources


@pytest.mark.parametrize("kind", ["word2vec-binary", "word2vec-text", "glove-text", "pickle", "npz"])
def test_each_source_format_recovers_the_rows(tmp_path, kind):
    words, vectors, table, expected = source_and_table()
    word_list = None
    if kind == "word2vec-binary":
        spec = write_w2v_binary(tmp_path / "v.bin", words, vectors)
    elif kind == "word2vec-text":
        spec = write_w2v_text(tmp_path / "v.txt", words, vectors)
    elif kind == "glove-text":
        spec = write_w2v_text(tmp_path / "v.txt", words, vectors, header=False)
    else:
        word_list = tmp_path / "words.txt"
        word_list.write_text("".join(w + "\n" for w in words))
        if kind == "pickle":  # VATT's word2vec.pkl layout
            spec = tmp_path / "word2vec.pkl"
            spec.write_bytes(pickle.dumps({"word_embeddings": vectors}))
        else:
            spec = tmp_path / "v.npz"
            np.savez(spec, word_embeddings=vectors, other=np.zeros(3))
    _, chunks = open_vector_source(spec, word_list, chunk_rows=64)  # several chunks
    result = match_vocabulary(torch.from_numpy(table), chunks)
    assert result.words == expected
    r = result.report
    assert r["source_rows"] == len(words) and r["matched"] == 120 and r["exact"] == 120
    assert r["unmatched"] == [121, 122] and r["match_rate"] == pytest.approx(120 / 122)


def test_a_matrix_needs_a_word_list_of_its_size(tmp_path):
    _, vectors, _, _ = source_and_table()
    np.save(tmp_path / "m.npy", vectors)
    with pytest.raises(ValueError, match="needs a word list"):
        open_vector_source(tmp_path / "m.npy")
    (tmp_path / "w.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match="has 2 words but the matrix"):
        open_vector_source(tmp_path / "m.npy", tmp_path / "w.txt")


def test_streamed_chunks_equal_the_whole_file(tmp_path):
    words, vectors, _, _ = source_and_table(n_source=50)
    path = write_w2v_binary(tmp_path / "v.bin", words, vectors)
    chunks = list(iter_word_vectors(path, chunk_rows=7))
    assert [len(w) for w, _ in chunks] == [7] * 7 + [1]
    whole_words, whole = read_word2vec_binary(path)
    assert sum((w for w, _ in chunks), []) == whole_words == words
    np.testing.assert_array_equal(np.concatenate([v for _, v in chunks]), whole)


# ---------------------------------------------------------------------------------------------
# Tolerance: dtype round trips match, anything farther does not


def test_float16_round_trips_still_match(tmp_path):
    words, vectors, table, expected = source_and_table()
    word_list = tmp_path / "words.txt"
    word_list.write_text("".join(w + "\n" for w in words))
    np.savez(tmp_path / "half.npz", word_embeddings=vectors.astype(np.float16))
    result = match_vocabulary(table, open_vector_source(tmp_path / "half.npz", word_list)[1])
    assert result.words == expected
    assert result.report["exact"] == 0 and result.report["close"] == 120
    assert 0.9999 <= result.report["min_cosine"] < 1.0
    # a float16 model's table against the float32 source
    source = write_w2v_binary(tmp_path / "v.bin", words, vectors)
    assert match_vocabulary(torch.from_numpy(table).half(), open_vector_source(source)[1]).words == expected
    # a text file printed with 6 significant digits
    text = write_w2v_text(tmp_path / "v6.txt", words, vectors, fmt="%.6g")
    assert match_vocabulary(table, open_vector_source(text)[1]).words == expected


def test_vectors_beyond_the_threshold_do_not_match():
    words, vectors, table, _ = source_and_table()
    rng = np.random.default_rng(5)
    noise = rng.standard_normal(vectors.shape).astype(np.float32)
    noise -= (noise * vectors).sum(1, keepdims=True) / (vectors * vectors).sum(1, keepdims=True) * vectors
    # a perpendicular offset of relative size 0.02: cosine 1/sqrt(1 + 0.02^2) = 0.9998 < 0.9999
    noise *= 0.02 * np.linalg.norm(vectors, axis=1, keepdims=True) / np.linalg.norm(noise, axis=1, keepdims=True)
    result = match_vocabulary(table, [(words, vectors + noise)])
    assert result.report["matched"] == 0


def test_row_index_finds_every_pair_within_the_threshold():
    rng = np.random.default_rng(0)
    n, dim, thr = 3000, 300, 0.9999
    rows = rng.standard_normal((n, dim))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    # queries: copies of rows pushed to cosines spread over [0.99985, 1] (two thirds inside the threshold)
    base = rows[rng.integers(0, n, 4000)]
    perp = rng.standard_normal(base.shape)
    perp -= (perp * base).sum(1, keepdims=True) * base
    perp /= np.linalg.norm(perp, axis=1, keepdims=True)
    angle = np.arccos(rng.uniform(0.99985, 1.0, len(base)))
    queries = np.cos(angle)[:, None] * base + np.sin(angle)[:, None] * perp
    index = RowIndex(rows, thr)
    assert index.bits >= 12  # the hash does separate the rows
    q, r, cos = index.query(queries)
    brute = np.argwhere(queries @ rows.T >= thr)
    assert 2400 < len(brute) < 2900  # two thirds of the queries
    assert sorted(zip(q.tolist(), r.tolist())) == sorted(map(tuple, brute.tolist()))
    assert len(index.keys) < 64 * n


# ---------------------------------------------------------------------------------------------
# Special, ambiguous, duplicate and renamed rows; the file written


def test_ambiguous_duplicate_and_special_rows_are_reported():
    rng = np.random.default_rng(2)
    v = rng.standard_normal((4, 8)).astype(np.float32)
    words = ["Alpha", "alpha", "beta", "gamma", "delta"]
    vectors = np.stack([v[0], v[0], v[1], v[2], v[3]])  # "Alpha" and "alpha" share a vector
    table = np.stack([np.zeros(8), v[1], v[0], v[1], np.zeros(8), np.zeros(8), np.zeros(8), v[2], v[3]])
    result = match_vocabulary(table, [(words, vectors)], names={8: "<named>"})
    assert result.words == ["<pad>", "beta", "alpha", "<duplicate-3>", "<unk>", "<bos>", "<eos>", "gamma",
                            "<named>"]
    r = result.report
    assert r["kind"] == "dmvr"
    assert r["ambiguous"] == [{"row": 2, "word": "alpha", "candidates": ["alpha", "Alpha"], "num_candidates": 2}]
    assert r["duplicates"] == [{"row": 3, "word": "beta", "same_as": 1}]
    assert [s["row"] for s in r["special"]] == [8, 0, 4, 5, 6]
    assert r["match_rate"] == 1.0  # rows 1, 2, 3, 7 of the 4 that need a word


def test_upper_case_words_are_renamed_in_a_dmvr_vocabulary(tmp_path):
    v = np.random.default_rng(3).standard_normal((2, 8)).astype(np.float32)
    table = np.concatenate([np.zeros((4, 8)), v])
    result = match_vocabulary(table, [(["Paris", "london"], v)])
    assert result.words[4:] == ["<unwritable-4>", "london"]
    assert result.report["renamed"] == [{"row": 4, "word": "Paris", "why": "upper case in a DMVR vocabulary"}]
    assert write_vocabulary(result.words, tmp_path / "v.txt") == "dmvr"
    tok = dmvr_tokenizer(tmp_path / "v.txt", max_words=4)
    assert tok(["London now"]).ids.tolist() == [[5, 1, 0, 0]]  # <unk> is the second zero row


def test_write_vocabulary_refuses_what_would_not_read_back(tmp_path):
    with pytest.raises(ValueError, match="twice"):
        write_vocabulary(["<pad>", "a", "a"], tmp_path / "v.txt")
    assert not list(tmp_path.iterdir())


def test_run_vocab_match_writes_nothing_below_min_match_and_everything_above(tmp_path):
    from mmv_torch.weights.vocab_match import MatchRefused

    words, vectors, table, expected = source_and_table()
    src = write_w2v_binary(tmp_path / "v.bin", words, vectors)
    half = np.concatenate([table[:60], np.random.default_rng(9).standard_normal((63, 24))])
    with pytest.raises(MatchRefused, match=r"only 59 of 122 rows \(48.4%\)"):
        run_vocab_match(half, tmp_path / "out" / "v.txt", src, json_path=tmp_path / "out" / "r.json")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    report = run_vocab_match(half, tmp_path / "out" / "v.txt", src, json_path=tmp_path / "out" / "r.json",
                             min_match=0.4)
    assert load_vocabulary_file(tmp_path / "out" / "v.txt")[0][:60] == expected[:60]
    assert json.loads((tmp_path / "out" / "r.json").read_text()) == report
    assert report["unmatched_count"] == 63


def test_cli_names_rows_and_checks_its_options(tiny_export, tmp_path):
    out = tmp_path / "v.txt"
    assert main(["vocab", "match", "--checkpoint", str(tiny_export), "--out", str(out), "--name", "0=<nothing>"]) == 0
    assert load_vocabulary_file(out)[0][0] == "<nothing>"
    with pytest.raises(SystemExit) as e:
        main(["vocab", "match", "--checkpoint", str(tiny_export), "--out", str(out), "--name", "x=y"])
    assert e.value.code == 2
    assert main(["vocab", "match", "--checkpoint", str(tiny_export), "--out", str(tmp_path)]) == 2  # a folder
