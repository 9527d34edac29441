"""``mmv-torch fetch``: a local HTTP server on 127.0.0.1 serves a stand-in of a released checkpoint (the
official key layout at 1/8 width); download with progress and resume, checksum refusal, conversion, and
the origin and licence recorded in the folder. Nothing leaves 127.0.0.1."""

import hashlib
import http.server
import json
import threading

import pytest
import torch

import mmv_torch
from mmv_torch.cli.main import main
from mmv_torch.weights import fetch as F
from tests.helpers.official_standin import write_standin


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.payload`` at any path; honours ``Range`` unless ``server.ignore_range``; closes the
    connection after ``server.cut`` bytes of the next response when set (a killed download)."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        srv = self.server
        srv.requests.append({"path": self.path, "range": self.headers.get("Range")})
        data, start = srv.payload, 0
        rng = self.headers.get("Range")
        if rng and not srv.ignore_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut is not None:
            body, srv.cut = body[:srv.cut], None
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    root = tmp_path_factory.mktemp("standin")
    model = write_standin(root / "mmv_s3d.pkl")
    return {"model": model, "payload": (root / "mmv_s3d.pkl").read_bytes()}


@pytest.fixture
def server(standin):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.payload, srv.requests, srv.cut, srv.ignore_range = standin["payload"], [], None, False
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/deepmind-research-mmv/mmv_s3d.pkl"
    yield srv
    srv.shutdown()
    srv.server_close()


def test_fetch_converts_and_records_origin_and_licence(server, standin, tmp_path, capsys, monkeypatch):
    import yaml

    monkeypatch.setattr("mmv_torch.progress.enabled", lambda requested=True: requested)  # as on a terminal
    sha = hashlib.sha256(standin["payload"]).hexdigest()
    out = tmp_path / "weights"
    assert main(["fetch", "mmv_s3d", "--url", server.url, "--sha256", sha, "--out", str(out), "--cache",
                 str(tmp_path / "cache")]) == 0
    captured = capsys.readouterr()
    assert "100%" in captured.err and "mmv_s3d.pkl" in captured.err  # the progress bar
    assert "CC BY-NC 4.0" in captured.out and "verified" in captured.out
    config = json.loads((out / "config.json").read_text())
    origin = config["origin"]
    assert origin["sha256"] == sha and origin["sha256_verified"] and origin["url"] == server.url
    assert origin["licence"] == "CC BY-NC 4.0" and "by-nc/4.0" in origin["licence_url"]
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["license"] == "cc-by-nc-4.0" and meta["library_name"] == "mmv-torch"
    assert meta["mmv_input_contract"]["sample_rate"] == 48000 and meta["mmv_input_contract"]["audio_frontend"] == "dmvr"
    assert sha in card
    model, preprocess, _ = mmv_torch.load(out)  # the origin in config.json does not disturb loading
    for k, w in standin["model"].state_dict().items():
        if not k.endswith("num_batches_tracked"):
            torch.testing.assert_close(model.state_dict()[k], w)
    assert preprocess.contract()["num_frames"] == 32
    assert mmv_torch.weights.folder.read_origin(out)["name"] == "mmv_s3d"
    # a second fetch uses the cached download: no request
    n = len(server.requests)
    assert main(["fetch", "mmv_s3d", "--url", server.url, "--out", str(tmp_path / "again"), "--cache",
                 str(tmp_path / "cache")]) == 0
    assert len(server.requests) == n and "using the downloaded" in capsys.readouterr().err


def test_a_killed_download_resumes_with_a_range_request(server, standin, tmp_path):
    cut = len(standin["payload"]) // 3
    server.cut = cut
    with pytest.raises(OSError, match="run the same command again"):
        F.download(server.url, tmp_path / "mmv_s3d.pkl", progress=False, timeout=10)
    part = tmp_path / "mmv_s3d.pkl.part"
    assert part.stat().st_size == cut and not (tmp_path / "mmv_s3d.pkl").exists()
    F.download(server.url, tmp_path / "mmv_s3d.pkl", progress=False, timeout=10)
    assert server.requests[-1]["range"] == f"bytes={cut}-"
    assert (tmp_path / "mmv_s3d.pkl").read_bytes() == standin["payload"] and not part.exists()


def test_a_server_without_ranges_restarts_the_download(server, standin, tmp_path):
    (tmp_path / "mmv_s3d.pkl.part").write_bytes(b"stale bytes of another file")
    server.ignore_range = True
    F.download(server.url, tmp_path / "mmv_s3d.pkl", progress=False, timeout=10)
    assert (tmp_path / "mmv_s3d.pkl").read_bytes() == standin["payload"]


def test_a_wrong_checksum_is_refused(server, tmp_path, capsys):
    out = tmp_path / "weights"
    assert main(["fetch", "mmv_s3d", "--url", server.url, "--sha256", "0" * 64, "--out", str(out), "--cache",
                 str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("downloading") and len(err) == 2
    assert err[1].startswith("mmv-torch fetch: error:") and "is not the expected" in err[1]
    assert "nothing was converted" in err[1]
    assert not out.exists() and not (tmp_path / "cache" / "mmv_s3d.pkl").exists()
    assert main(["fetch", "mmv_s3d", "--sha256", "xyz", "--out", str(out)]) == 2
    assert "64 hexadecimal digits" in capsys.readouterr().err


def test_unknown_names_and_unreachable_servers_are_one_line_errors(tmp_path, capsys):
    assert main(["fetch", "tiny", "--out", str(tmp_path / "w")]) == 2
    assert "no released weights named 'tiny'" in capsys.readouterr().err
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    port = srv.server_address[1]
    srv.server_close()  # nothing listens there any more
    assert main(["fetch", "mine", "--url", f"http://127.0.0.1:{port}/x.pkl", "--out", str(tmp_path / "w"),
                 "--cache", str(tmp_path / "c")]) == 2
    assert f"127.0.0.1:{port}" in capsys.readouterr().err
    assert F.RELEASED["mmv_s3d"].url.endswith("/mmv_s3d.pkl") and F.RELEASED["mmv_s3d"].licence == "CC BY-NC 4.0"
