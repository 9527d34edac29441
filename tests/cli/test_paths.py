"""One place knows every path of every command (``classify`` in each parser, ``check_outputs`` in
cli/support.py): an output never replaces an input, a file of an input index or run folder, or another
output (P2, issue 25 item 3)."""

import argparse

import pytest

from mmv_torch.cli.main import build_parser, main
from mmv_torch.cli.support import PATH_ROLES_KEY, ROLES, VALUE, check_outputs

_NOT_VALUED = (argparse._HelpAction, argparse._StoreTrueAction, argparse._StoreFalseAction,
               argparse._StoreConstAction, argparse._CountAction, argparse._VersionAction,
               argparse._SubParsersAction, argparse._AppendConstAction)
_PATH_WORDS = ("PATH", "FILE", "DIR", "OUT", "CSV", "MANIFEST", "INDEX", "REPORT", "VOCAB", "ROOT", "SPEC")


def leaf_parsers(parser: argparse.ArgumentParser, name: str = "mmv-torch"):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield name, parser
        return
    for sub in subs:
        for cmd, child in sub.choices.items():
            yield from leaf_parsers(child, f"{name} {cmd}")


def test_every_string_option_of_every_command_is_classified():
    """Walks every subcommand's parser: an option taking a free string (no choices, no numeric type) must be
    classified as an input, an output or a plain value, so no path escapes the output check."""
    missing, wrong = [], []
    leaves = list(leaf_parsers(build_parser()))
    assert len(leaves) >= 20
    for name, parser in leaves:
        roles = parser._defaults.get(PATH_ROLES_KEY)
        if roles is None:
            roles = {}
        for action in parser._actions:
            if isinstance(action, _NOT_VALUED) or action.choices is not None:
                continue
            if action.type not in (None, str):
                continue
            if action.dest not in roles:
                missing.append(f"{name}: {action.option_strings or action.dest}")
                continue
            role = roles[action.dest][0]
            assert role in ROLES
            words = f"{action.metavar or ''} {action.help or ''}".upper()
            if role == VALUE and any(w in str(action.metavar or "").upper() for w in _PATH_WORDS):
                wrong.append(f"{name}: {action.dest} looks like a path ({words[:60]}) but is classified as a value")
    assert not missing, "options not classified by cli.support.classify: " + "; ".join(missing)
    assert not wrong, "; ".join(wrong)


def _check(*argv):
    args = build_parser().parse_args([str(a) for a in argv])
    check_outputs(args)


def _refused(*argv, match):
    with pytest.raises(ValueError, match=match):
        _check(*argv)


def test_prepare_json_onto_annotations_is_refused_and_nothing_changes(tmp_path, capsys):
    """p_json_is_ann: the finding's command, rc 2 and the CSV kept."""
    ann = tmp_path / "MSRVTT_JSFUSION_test.csv"
    ann.write_text("key,vid_key,video_id,sentence\nret0,msr1,video1,a man cooks\n")
    media = tmp_path / "media"
    media.mkdir()
    (media / "video1.mp4").touch()
    before = ann.read_bytes()
    rc = main(["data", "prepare", "msrvtt", "--annotations", str(ann), "--media-root", str(media), "--out",
               str(tmp_path / "m.jsonl"), "--json", str(ann)])
    assert rc == 2
    assert "would overwrite the input --annotations" in capsys.readouterr().err
    assert ann.read_bytes() == before and not (tmp_path / "m.jsonl").exists()


def test_prepare_json_equal_to_out_is_refused(tmp_path):
    """p_json_is_out."""
    _refused("data", "prepare", "msrvtt", "--annotations", tmp_path / "a.csv", "--media-root", tmp_path, "--out",
             tmp_path / "m.jsonl", "--json", tmp_path / "m.jsonl", match="both write")


@pytest.mark.parametrize("option", ["--labels", "--media-root"])
def test_prepare_out_onto_other_inputs_is_refused(tmp_path, option):
    (tmp_path / "media").mkdir()
    target = tmp_path / ("labels.csv" if option == "--labels" else "media")
    argv = ["data", "prepare", "audioset", "--annotations", tmp_path / "a.csv", "--media-root", tmp_path / "media",
            "--out", tmp_path / "m.jsonl", "--json", target]
    if option == "--labels":
        argv += ["--labels", target]
    _refused(*argv, match="input|is a folder")


def test_vocab_match_json_onto_vectors_is_refused(tmp_path):
    """v_json_is_vectors."""
    vec = tmp_path / "vec.txt"
    vec.write_text("2 3\na 1 2 3\nb 4 5 6\n")
    _refused("vocab", "match", "--checkpoint", tmp_path / "run", "--vectors", vec, "--out", tmp_path / "v.txt",
             "--json", vec, match="would overwrite the input --vectors")
    _refused("vocab", "match", "--checkpoint", tmp_path / "run", "--vectors", vec, "--words", tmp_path / "w.txt",
             "--out", tmp_path / "w.txt", match="would overwrite the input --words")


def test_documented_vocab_match_into_the_converted_folder_still_works(tmp_path):
    """docs/reproduce.md: `vocab match --checkpoint weights/mmv_s3d ... --out weights/mmv_s3d/vocab.txt`."""
    weights = tmp_path / "weights" / "mmv_s3d"
    weights.mkdir(parents=True)
    (weights / "config.json").write_text("{}")
    (weights / "model.safetensors").write_bytes(b"w")
    _check("vocab", "match", "--checkpoint", weights, "--vectors", tmp_path / "g.bin", "--out", weights / "vocab.txt",
           "--json", tmp_path / "vocab_match.json")
    _refused("vocab", "match", "--checkpoint", weights, "--out", tmp_path / "v.txt", "--json",
             weights / "model.safetensors", match="replace a file of that folder")


def _fake_index(tmp_path):
    idx = tmp_path / "idx"
    (idx / "vectors").mkdir(parents=True)
    (idx / "meta.sqlite").write_bytes(b"SQLite format 3\x00")
    return idx


def test_index_search_json_onto_the_index_or_the_query_is_refused(tmp_path, capsys):
    """i_search_json_onto_index, i_search_json_query: the index and the query video survive."""
    idx = _fake_index(tmp_path)
    before = (idx / "meta.sqlite").read_bytes()
    rc = main(["index", "search", str(idx), "--text", "ball", "--json", str(idx / "meta.sqlite")])
    assert rc == 2 and "inside that index folder" in capsys.readouterr().err
    assert (idx / "meta.sqlite").read_bytes() == before
    _refused("index", "search", idx, "--text", "ball", "--json", idx / "vectors" / "new.json", match="index folder")
    q = tmp_path / "q.mp4"
    q.write_bytes(b"video")
    _refused("index", "search", idx, "--video", q, "--json", q, match="would overwrite the input --video")
    _refused("index", "search", idx, "--audio", q, "--json", q, match="would overwrite the input --audio")
    _check("index", "search", idx, "--text", "ball", "--json", tmp_path / "hits.json")


def test_outputs_never_replace_files_of_an_input_run_folder(tmp_path):
    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    _refused("eval", "linear", "--checkpoint", run, "--data", tmp_path / "m.jsonl", "--json", run / "config.json",
             match="replace a file of that folder")
    _refused("eval", "retrieval", "--checkpoint", run, "--data", tmp_path / "m.jsonl", "--json",
             run / "export" / "r.json", match="replace a file of that folder")
    _refused("embed", "--checkpoint", run, "--data", tmp_path / "m.jsonl", "--modality", "video", "--out",
             run / "checkpoints" / "e", match="replace a file of that folder")
    _refused("index", "build", "--checkpoint", run, "--videos", tmp_path, "--out", run,
             match="would overwrite the input --checkpoint")
    # a new file beside the run's own files is fine, and so is continuing a run in its own folder
    _check("eval", "linear", "--checkpoint", run, "--data", tmp_path / "m.jsonl", "--json", run / "linear.json")
    _check("train", "--preset", "tiny", "--data", "synthetic:4", "--out", run, "--resume", run)
    _check("train", "--preset", "tiny", "--data", "synthetic:4", "--out", run, "--config", run / "config.json")


def test_eval_report_md_beside_json_may_not_replace_an_input(tmp_path):
    data = (tmp_path / "m.json").with_suffix(".md")  # where the report's table goes
    data.write_text("x")
    _refused("eval", "linear", "--checkpoint", tmp_path / "x.pt", "--data", data, "--json", tmp_path / "m.json",
             match="would overwrite the input --data")


def test_folders_replaced_whole_may_not_hold_an_input(tmp_path):
    (tmp_path / "x").mkdir()
    pkl = tmp_path / "x" / "mmv_s3d.pkl"
    pkl.write_bytes(b"p")
    _refused("convert", pkl, tmp_path / "x", match="replaced whole")
    manifest = tmp_path / "x" / "m.jsonl"
    manifest.write_text("")
    _refused("data", "shard", manifest, tmp_path / "x", "--overwrite", match="replaced whole")
    _check("data", "shard", manifest, tmp_path / "shards")


def test_train_data_specs_are_inputs(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text("")
    _refused("data", "check", m, "--clean", m, match="would overwrite the input")
    _refused("data", "check", m, "--json", tmp_path / "r.json", "--clean", tmp_path / "r.json", match="both write")
    _refused("train", "--preset", "tiny", "--data", f"synthetic:4,{tmp_path}@2", "--out", tmp_path,
             match="would overwrite the input --data")


def test_every_documented_command_passes_the_output_check(tmp_path, monkeypatch):
    """The commands of README.md and docs/ (run from an empty folder) are not refused by the new checks."""
    import re
    import shlex
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(tmp_path)
    checked = 0
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = re.sub(r"\\\n\s*", " ", doc.read_text())
        for line in re.findall(r"(?:^|`)mmv-torch ([^`\n#]+)", text, flags=re.M):
            try:
                argv = shlex.split(line.replace("$", "X"))
                args = build_parser().parse_args(argv)
            except (ValueError, SystemExit):
                continue
            check_outputs(args)
            checked += 1
    assert checked >= 30
