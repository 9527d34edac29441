"""The search page in headless Chromium (Debian's /usr/bin/chromium driven by Playwright): a typed query
naming a clip's object and motion, and an uploaded sound, show that clip as the top hit.

The tiny test model is random, so the index is made certain rather than learned: the target clip's
windows get, in the searched space, the embedding of the very query the test then sends (its caption's
text embedding in S_vt, its sound's audio embedding in S_va), computed by the same model. The page is
thus checked end to end (typing, upload, API, rendering) against an expected hit that cannot be wrong.
Screenshots go to $MMV_TEST_ARTIFACTS (default: build/test-artifacts/) /index_browser/.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.index_utils import clip_caption, plant_vectors, running_server, synthetic_clips, tiny_checkpoint

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("MMV_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "build" / "test-artifacts"))

# CI installs chromium (.ci/run): there the test must run, not skip.
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not CHROMIUM.exists() and os.environ.get("CI") != "true",
                                 reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium; CI "
                                        "installs it in .ci/run)")]


def test_page_finds_the_clip_by_text_and_by_sound(tmp_path: Path) -> None:
    if os.environ.get("CI") == "true":
        import playwright.sync_api as sync_api  # CI installs the dev extra: a missing package is a failure
    else:
        sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (the dev extra)")
    from mmv_torch.index.build import build_index
    from mmv_torch.index.query import open_searcher
    from mmv_torch.index.server import create_app

    clips = synthetic_clips(tmp_path / "clips", n=4, seed=3)
    ckpt = tiny_checkpoint(tmp_path / "ckpt", clips)
    build_index(ckpt, clips, tmp_path / "idx", progress=False)
    target = sorted(clips.glob("clip_*.mp4"))[2]
    caption = clip_caption(target)
    searcher = open_searcher(tmp_path / "idx")
    plant_vectors(tmp_path / "idx", target, "video_vt", searcher.embed("text", text=caption))
    plant_vectors(tmp_path / "idx", target, "video_va", searcher.embed("audio", path=target))
    out = ARTIFACTS / "index_browser"
    out.mkdir(parents=True, exist_ok=True)
    with running_server(create_app(open_searcher(tmp_path / "idx"))) as base, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.goto(base + "/")
            page.wait_for_selector("#info:has-text('4 videos')", timeout=20_000)
            page.fill("#query", caption)
            page.fill("#k", "3")
            page.click("#text-form button[type=submit]")
            page.wait_for_selector("#status:has-text('hits for')", timeout=30_000)
            names = page.locator("#results .hit .path").all_inner_texts()
            page.screenshot(path=str(out / "text_query.png"), full_page=True)
            assert names[0] == target.name and len(names) == 3, names
            assert page.locator("#results .hit img.thumb").first.evaluate("img => img.naturalWidth") > 0

            page.set_input_files("#audio-file", str(target))
            page.click("#audio-form button[type=submit]")
            page.wait_for_selector(f"#status:has-text('the sound of {target.name}')", timeout=30_000)
            names = page.locator("#results .hit .path").all_inner_texts()
            page.screenshot(path=str(out / "audio_query.png"), full_page=True)
            assert names[0] == target.name, names

            page.locator("#results .hit .more").first.click()
            page.wait_for_selector("#status:has-text('more like')", timeout=30_000)
            assert page.locator("#results .hit").count() == 3

            page.fill("#query", "zzzz qqqq")
            page.click("#text-form button[type=submit]")
            page.wait_for_selector("#status.error", timeout=30_000)
            assert "400" in page.inner_text("#status")
        finally:
            browser.close()
    assert (out / "text_query.png").stat().st_size > 1000
