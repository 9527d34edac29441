"""The search page in headless Chromium (Debian's /usr/bin/chromium driven by Playwright): the landing
view, a text query shown as a grid grouped by video, a click on a moment that plays from there, Back
restoring the previous query from the URL, "no good match" for a nonsense query, an AVI hit played
through its transcoded preview, a text + sound query with per-part scores, "more like this" and the
keyboard.

The tiny test model is random, so the index is made certain rather than learned: the target clips'
windows get, in the searched space, the embedding of the very query the test then sends (its caption's
text embedding in S_vt, its sound's audio embedding in S_va), computed by the same model, and the index
is calibrated again as a build does. Screenshots go to $MMV_TEST_ARTIFACTS (default:
build/test-artifacts/) /index_browser/.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import pytest

from tests.helpers.index_utils import (
    clip_caption,
    plant_vectors,
    recalibrate,
    running_server,
    synthetic_clips,
    tiny_checkpoint,
)

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("MMV_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "build" / "test-artifacts"))

# CI installs chromium (.ci/run): there the test must run, not skip.
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not CHROMIUM.exists() and os.environ.get("CI") != "true",
                                 reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium; CI "
                                        "installs it in .ci/run)")]


def to_avi(src: Path, dst: Path) -> Path:
    """``src``'s video as MPEG-4 Part 2 in an AVI container (a file browsers cannot play)."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", format="avi") as out:
        vin = inp.streams.video[0]
        fps = round(float(vin.average_rate))
        vout = out.add_stream("mpeg4", rate=fps)
        vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        for i, frame in enumerate(inp.decode(vin)):
            f = frame.reformat(format="yuv420p")
            f.pts, f.time_base = i, Fraction(1, fps)
            out.mux(vout.encode(f))
        out.mux(vout.encode(None))
    return dst


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    if os.environ.get("CI") == "true":
        import playwright.sync_api as sync_api  # CI installs the dev extra: a missing package is a failure
    else:
        sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (the dev extra)")
    from mmv_torch.index.api import open_index
    from mmv_torch.index.build import build_index
    from mmv_torch.index.server import create_app

    tmp = tmp_path_factory.mktemp("browser")
    clips = synthetic_clips(tmp / "clips", n=4, seed=3)
    ckpt = tiny_checkpoint(tmp / "ckpt", clips)
    source = sorted(clips.glob("clip_*.mp4"))[3]
    avi = to_avi(source, clips / "old_camera.avi")
    avi_caption = clip_caption(source)
    source.unlink()
    build_index(ckpt, clips, tmp / "idx", progress=False)
    target = sorted(clips.glob("clip_*.mp4"))[2]
    caption = clip_caption(target)
    index = open_index(tmp / "idx")
    # its last window only: the best moment is not at 0 s
    plant_vectors(tmp / "idx", target, "video_vt", index.searcher.embed("text", text=caption), rows=slice(-1, None))
    plant_vectors(tmp / "idx", target, "video_va", index.searcher.embed("audio", path=target))
    plant_vectors(tmp / "idx", avi, "video_vt", index.searcher.embed("text", text=avi_caption))
    recalibrate(tmp / "idx")
    out = ARTIFACTS / "index_browser"
    out.mkdir(parents=True, exist_ok=True)
    app = create_app(open_index(tmp / "idx"), preview_dir=tmp / "previews")
    with running_server(app) as base, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"])
        try:
            yield {"base": base, "browser": browser, "target": target, "caption": caption, "avi": avi,
                   "avi_caption": avi_caption, "out": out, "clips": clips, "ckpt": ckpt, "tmp": tmp}
        finally:
            browser.close()


def new_page(site):
    page = site["browser"].new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    return page


def shot(page, site, name: str) -> None:
    """A full-page screenshot once every image has loaded."""
    page.wait_for_function("[...document.images].every((i) => i.complete)", timeout=10_000)
    page.screenshot(path=str(site["out"] / f"{name}.png"), full_page=True)


def search(page, text: str) -> None:
    page.fill("#query", text)
    page.fill("#k", "6")
    page.click("#search-form button[type=submit]")
    page.wait_for_selector(f"#status:has-text('{text[:20]}')", timeout=30_000)
    page.wait_for_selector("#status:has-text('hits in')", timeout=30_000)


def test_landing_shows_the_collection(site) -> None:
    page = new_page(site)
    page.goto(site["base"] + "/")
    page.wait_for_selector("#landing:not([hidden]) #counts:has-text('4 videos')", timeout=20_000)
    counts = page.inner_text("#counts")
    assert "1 .avi" in counts and "3 .mp4" in counts and "with sound" in counts
    assert page.locator("#sample .card").count() == 4
    assert page.locator("#sample .card img.thumb").first.evaluate("img => img.complete && img.naturalWidth > 0")
    assert not page.errors


def test_text_query_grid_moment_click_and_back(site) -> None:
    page = new_page(site)
    page.goto(site["base"] + "/")
    target, caption = site["target"], site["caption"]
    search(page, caption)
    assert f"q={caption.split()[0]}" in page.url and "k=6" in page.url
    names = page.locator("#results .card .name").all_inner_texts()
    assert names[0] == target.name and len(names) == len(set(names)) == 4, names  # one card per video
    assert page.locator("#notice").is_hidden()
    card = page.locator("#results .card").first
    assert "score 1.00" in card.locator(".score").inner_text()
    marks = card.locator(".timeline .mark")
    assert marks.count() >= 1
    shot(page, site, "text_query")
    last = marks.nth(marks.count() - 1)
    start = float(last.get_attribute("data-start"))
    last.click()
    player = card.locator("video.player")
    page.wait_for_function("([v, t]) => v.readyState >= 1 && v.currentTime >= t - 0.05 && v.currentTime < t + 1.5",
                           arg=[player.element_handle(), start], timeout=20_000)
    assert start > 0 and card.locator(".open").get_attribute("href").endswith(f"#t={start:g}")

    search(page, "filler3")  # a query that matches nothing in particular
    page.wait_for_selector("#notice:not([hidden])", timeout=10_000)
    assert "No good match" in page.inner_text("#notice")
    shot(page, site, "no_good_match")

    page.go_back()
    page.wait_for_function("q => document.getElementById('query').value === q", arg=caption, timeout=10_000)
    page.wait_for_selector("#status:has-text('hits in')", timeout=30_000)
    assert page.locator("#results .card .name").first.inner_text() == target.name
    assert page.locator("#notice").is_hidden()
    page.reload()  # a bookmark: the URL alone restores the query
    page.wait_for_selector("#status:has-text('hits in')", timeout=30_000)
    assert page.input_value("#query") == caption and page.input_value("#k") == "6"
    assert not page.errors


def test_an_avi_hit_plays_through_its_preview(site) -> None:
    page = new_page(site)
    page.goto(site["base"] + "/")
    search(page, site["avi_caption"])
    card = page.locator("#results .card").first
    assert card.locator(".name").inner_text() == site["avi"].name
    card.locator(".timeline .mark").first.click()
    page.wait_for_selector("#results .card >> nth=0 >> .msg:has-text('Preview (transcoded')", timeout=10_000)
    player = card.locator("video.player")
    page.wait_for_function("v => v.readyState >= 2 && !v.error", arg=player.element_handle(), timeout=60_000)
    assert "/preview/" in player.evaluate("v => v.currentSrc")
    shot(page, site, "avi_preview")


def test_text_and_sound_query_shows_per_part_scores(site) -> None:
    page = new_page(site)
    page.goto(site["base"] + "/")
    target = site["target"]
    page.fill("#query", site["caption"])
    page.set_input_files("#audio-file", str(target))
    page.click("#search-form button[type=submit]")
    page.wait_for_selector(f"#status:has-text('the sound of {target.name}')", timeout=30_000)
    page.wait_for_selector("#status:has-text('hits in')", timeout=30_000)
    card = page.locator("#results .card").first
    assert card.locator(".name").inner_text() == target.name
    parts = card.locator(".parts .part").all_inner_texts()
    assert len(parts) == 2 and parts[0].startswith("text 1.00") and parts[1].startswith("sound 1.00"), parts
    assert "video_vt + video_va" in card.locator(".cosine").inner_text()
    shot(page, site, "text_and_sound")


def test_more_like_this_filters_and_keyboard(site) -> None:
    page = new_page(site)
    page.goto(site["base"] + "/?q=" + site["caption"].replace(" ", "+") + "&path=*.mp4&k=6")
    page.wait_for_selector("#status:has-text('hits in')", timeout=30_000)
    names = page.locator("#results .card .name").all_inner_texts()
    assert len(names) == 3 and not any(n.endswith(".avi") for n in names), names
    assert page.input_value("#f-path") == "*.mp4"
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.querySelector('.name').textContent") == names[1]
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "query"
    page.locator("#results .card .more-like").first.click()
    page.wait_for_selector("#status:has-text('more like')", timeout=30_000)
    assert "similar=" in page.url
    assert page.locator("#results .card").count() >= 1


def test_an_audio_only_hit_shows_no_picture_and_says_why(site) -> None:
    from mmv_torch.index.api import open_index
    from mmv_torch.index.build import build_index
    from mmv_torch.index.server import create_app
    from tests.helpers.index_utils import damage_stream

    folder = site["tmp"] / "sounds"
    folder.mkdir()
    clip = sorted(site["clips"].glob("clip_*.mp4"))[0]
    damaged = damage_stream(clip, folder / "broken_picture.mp4", "video")
    damage_stream(sorted(site["clips"].glob("clip_*.mp4"))[1], folder / "fine.mp4", "video", first=10 ** 6)
    summary = build_index(site["ckpt"], folder, site["tmp"] / "sound_idx", progress=False)
    assert summary["new_files_without_decodable_video"] == 1
    with running_server(create_app(open_index(site["tmp"] / "sound_idx"))) as base:
        page = new_page(site)
        page.goto(base + "/")
        page.set_input_files("#audio-file", str(damaged))
        page.select_option("#target", "audio")
        page.click("#search-form button[type=submit]")
        page.wait_for_selector("#status:has-text('hits in')", timeout=30_000)
        cards = page.locator("#results .card")
        names = cards.locator(".name").all_inner_texts()
        assert sorted(names) == ["broken_picture.mp4", "fine.mp4"], names
        card = cards.nth(names.index("broken_picture.mp4"))
        assert card.locator(".no-video").is_visible() and "cannot be decoded" in card.locator(".no-video").inner_text()
        assert card.locator("img.thumb").is_hidden() and card.locator(".more-like").is_hidden()
        other = cards.nth(names.index("fine.mp4"))
        assert other.locator("img.thumb").is_visible() and other.locator(".no-video").is_hidden()
        shot(page, site, "audio_only_hit")
        assert not page.errors
