"""Word-vector files damaged as users meet them (issue 25): a truncated or fake ``.gz`` (P15), headers
with a negative count or a zero dimension, and bytes that are not UTF-8 (P21): one ``ValueError`` that
names the file and says what is wrong, no Python argument the command line does not have."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from mmv_torch.data.text.wordvec import detect_format, iter_word_vectors, load_word_vectors
from mmv_torch.weights.vocab_match import run_vocab_match


def _text_vectors(path: Path, n: int = 3000, d: int = 20) -> np.ndarray:
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, d)).astype(np.float32)
    path.write_text(f"{n} {d}\n" + "".join(f"w{i} " + " ".join(f"{v:.6f}" for v in row) + "\n"
                                           for i, row in enumerate(vecs)))
    return vecs


def test_p15_truncated_gzip_is_one_line_naming_the_file(tmp_path):
    """v_trunc_txt_gz: `gzip -c vec.txt | head -c 100000 > cut.txt.gz; vocab match --vectors cut.txt.gz`."""
    vecs = _text_vectors(tmp_path / "vec.txt")
    data = gzip.compress((tmp_path / "vec.txt").read_bytes())
    cut = tmp_path / "cut.txt.gz"
    cut.write_bytes(data[:100000])
    assert len(data) > 100000
    with pytest.raises(ValueError, match=r"truncated gzip file .*cut.txt.gz"):
        list(iter_word_vectors(cut))
    with pytest.raises(ValueError, match=r"truncated gzip file .*cut.txt.gz"):
        load_word_vectors(cut)
    table = torch.from_numpy(np.concatenate([np.zeros((1, vecs.shape[1]), np.float32), vecs[:50]]))
    with pytest.raises(ValueError, match=r"truncated gzip file .*cut.txt.gz"):
        run_vocab_match(table, tmp_path / "v.txt", cut, min_match=0.0)
    assert not (tmp_path / "v.txt").exists()
    tiny = tmp_path / "tiny.txt.gz"
    tiny.write_bytes(data[:30])  # cut inside the first block: the header cannot even be read
    with pytest.raises(ValueError, match="truncated gzip file"):
        detect_format(tiny)


def test_p15_a_gz_that_is_not_gzip(tmp_path):
    fake = tmp_path / "fake.txt.gz"
    fake.write_bytes(b"3 2\na 1 2\n")
    with pytest.raises(ValueError, match=r"fake.txt.gz: not a valid gzip file"):
        load_word_vectors(fake)


@pytest.mark.parametrize("header", ["-5 50", "3 0"])
def test_p21_bad_word2vec_headers_are_named(tmp_path, header):
    """v_negheader_bin, v_zerodim_bin: "the source's vectors are 1-d" before."""
    p = tmp_path / "v.bin"
    p.write_bytes(header.encode() + b"\n" + b"\x00" * 64)
    with pytest.raises(ValueError, match=rf"v.bin: bad word2vec header b'{header}'"):
        list(iter_word_vectors(p))


def test_p21_not_utf8_says_so_without_python_arguments(tmp_path):
    """v_badutf8_bin, v_random_*: the message named `unicode_errors=`, which the command line has no flag for."""
    p = tmp_path / "v.txt"
    p.write_bytes(b"2 2\ncaf\xe9 1 2\nb 3 4\n")
    with pytest.raises(ValueError, match=r"v.txt: not UTF-8 text") as e:
        list(iter_word_vectors(p, fmt="word2vec-text"))
    assert "unicode_errors" not in str(e.value)
    b = tmp_path / "v.bin"
    b.write_bytes(b"1 2\n\xff\xfe " + np.zeros(2, "<f4").tobytes())
    with pytest.raises(ValueError, match=r"v.bin: row 0 word .* is not UTF-8") as e:
        list(iter_word_vectors(b))
    assert "unicode_errors" not in str(e.value)
