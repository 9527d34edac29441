"use strict";
// The search page. A text query, k and the filters live in the URL (?q=...&k=...&path=...; "more like
// this" is ?similar=WINDOW), so Back and bookmarks work; a sound or video file is sent with the text
// (their scores are fused by the server) and is not part of the URL. Hits are grouped into one card per
// video with its best moments on a timeline; a click plays from there.
const $ = (id) => document.getElementById(id);
const FILTERS = { "f-path": "path", "f-min": "min_duration", "f-max": "max_duration", "f-audio": "has_audio",
  "f-after": "after", "f-before": "before" };
const KIND = { text: "text", audio: "sound", video: "video", "video-audio": "video → sound" };
let current = null;  // {url, options, what, k, fromUrl}

function setStatus(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function call(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail || body);
    throw new Error(`${response.status}: ${detail}`);
  }
  return body;
}

const fmt = (s) => (s === null || s === undefined ? "–" : s.toFixed(2));
const clock = (t) => `${Math.floor(t / 60)}:${(t % 60).toFixed(1).padStart(4, "0")}`;

function k() {
  return Math.max(1, Math.min(100, parseInt($("k").value, 10) || 10));
}

function filterParams() {
  const p = new URLSearchParams();
  for (const [id, name] of Object.entries(FILTERS)) if ($(id).value) p.set(name, $(id).value);
  return p;
}

function stateFromUrl() {
  const p = new URLSearchParams(location.search);
  $("query").value = p.get("q") || "";
  $("k").value = p.get("k") || "10";
  for (const [id, name] of Object.entries(FILTERS)) $(id).value = p.get(name) || "";
  if ([...Object.values(FILTERS)].some((n) => p.get(n))) $("filters-box").open = true;
  return p;
}

// -- playing a moment ----------------------------------------------------------------------------
async function explain(card, url, hit) {
  const msg = card.querySelector(".msg");
  let why = "the browser could not play it";
  try {
    const r = await fetch(url);
    if (!r.ok) why = (await r.json()).detail || why;
  } catch (err) { why = String(err); }
  msg.textContent = hit.playable ? `This video cannot be played here: ${why}.`
    : `This ${hit.name.split(".").pop().toUpperCase()} file does not play in a browser and no preview could be made: ${why}`;
  msg.hidden = false;
}

function playAt(card, hit, t) {
  const player = card.querySelector(".player");
  let src = hit.file_url;
  let offset = 0;
  if (!hit.playable) {  // a transcoded preview segment of segment_s seconds
    const seg = Math.floor(t / current.segment_s);
    src = hit.preview_url.replace("{segment}", String(seg));
    offset = seg * current.segment_s;
    const msg = card.querySelector(".msg");
    msg.textContent = `Preview (transcoded: ${hit.name.split(".").pop().toUpperCase()} does not play in browsers), from ${clock(offset)}.`;
    msg.hidden = false;
  }
  player.hidden = false;
  player.dataset.offset = String(offset);
  player.dataset.target = String(t);
  const seek = () => {
    player.currentTime = Math.max(0, t - offset);
    player.play().catch(() => {});
  };
  if (player.dataset.src === src && player.readyState >= 1) { seek(); return; }
  player.dataset.src = src;
  player.onerror = () => explain(card, src, hit);
  player.addEventListener("loadedmetadata", seek, { once: true });
  player.preload = "auto";
  player.src = src;
  card.querySelector(".open").href = `${hit.file_url}#t=${t}`;
}

// -- results -------------------------------------------------------------------------------------
function groupByVideo(results) {
  const groups = new Map();
  for (const hit of results) {
    if (!groups.has(hit.path)) groups.set(hit.path, []);
    groups.get(hit.path).push(hit);
  }
  return [...groups.values()];  // in the order of each video's best hit
}

function partsText(hit) {
  return Object.values(hit.parts).map((p) => `${KIND[p.kind] || p.kind} ${fmt(p.score)} (cos ${p.cosine.toFixed(3)}, ${p.space})`);
}

function makeCard(hits) {
  const best = hits[0];
  const card = $("card").content.firstElementChild.cloneNode(true);
  card.dataset.path = best.path;
  if (best.has_video === false) {  // an audio-only window: found by its sound, no picture to show
    card.querySelector(".thumb").hidden = true;
    card.querySelector(".no-video").hidden = false;
    card.querySelector(".more-like").hidden = true;
  } else card.querySelector(".thumb").src = best.thumb_url;
  card.querySelector(".thumb").alt = best.name;
  card.querySelector(".name").textContent = best.rel;
  card.querySelector(".name").title = best.path;
  card.querySelector(".score").textContent = `score ${fmt(best.score)}`;
  card.querySelector(".cosine").textContent = `· cosine ${best.cosine.toFixed(3)} · ${best.spaces.join(" + ")}`;
  const parts = card.querySelector(".parts");
  if (Object.keys(best.parts).length > 1) {
    for (const text of partsText(best)) {
      const span = document.createElement("span");
      span.className = "part";
      span.textContent = text;
      parts.appendChild(span);
    }
  } else parts.hidden = true;
  const duration = best.duration || Math.max(...hits.map((h) => h.end));
  const line = card.querySelector(".timeline");
  const list = card.querySelector(".moments");
  for (const hit of hits) {  // a light bar per matching run of windows, a dark mark at its best window
    const t = hit.moment[0];
    const span = document.createElement("div");
    span.className = "span";
    span.style.left = `${(100 * hit.start) / duration}%`;
    span.style.width = `${(100 * (hit.end - hit.start)) / duration}%`;
    line.appendChild(span);
    const mark = document.createElement("button");
    mark.type = "button";
    mark.className = "mark";
    mark.style.left = `${(100 * t) / duration}%`;
    mark.style.width = `${(100 * (hit.moment[1] - t)) / duration}%`;
    mark.title = `best moment ${clock(t)}–${clock(hit.moment[1])} · score ${fmt(hit.score)}`;
    mark.setAttribute("aria-label", mark.title);
    mark.dataset.start = String(t);
    mark.addEventListener("click", () => playAt(card, hit, t));
    line.appendChild(mark);
    const b = document.createElement("button");
    b.type = "button";
    b.className = "moment";
    b.dataset.start = String(t);
    b.title = `matching ${clock(hit.start)}–${clock(hit.end)}`;
    b.textContent = `▶ ${clock(t)} (${fmt(hit.score)})`;
    b.addEventListener("click", () => playAt(card, hit, t));
    list.appendChild(b);
  }
  card.querySelector(".open").href = `${best.file_url}#t=${best.moment[0]}`;
  card.querySelector(".thumb").addEventListener("click", () => playAt(card, best, best.moment[0]));
  card.addEventListener("keydown", (e) => { if (e.key === "Enter" && e.target === card) playAt(card, best, best.moment[0]); });
  card.querySelector(".more-like").addEventListener("click", () => navigate({ similar: best.window, name: best.name }));
  return card;
}

function showResults(body, what) {
  const list = $("results");
  list.replaceChildren();
  $("landing").hidden = true;
  const cards = groupByVideo(body.results);
  setStatus(body.results.length ? `${body.results.length} hits in ${cards.length} videos for ${what}` : `no hits for ${what}`);
  const notice = $("notice");
  notice.hidden = body.good_match !== false;
  if (body.good_match === false) {
    notice.textContent = `No good match for ${what}: the best score ${fmt(body.results[0].score)} is below ` +
      `${body.threshold} (a random query reaches it). The nearest moments are shown anyway.`;
  }
  for (const hits of cards) list.appendChild(makeCard(hits));
  $("more").hidden = !(body.results.length >= current.k && current.k < 100);
}

async function run(url, options, what, kk) {
  current = { url, options, what, k: kk, segment_s: 30 };
  setStatus(`searching ${what}…`);
  try {
    const body = await call(url, options);
    current.segment_s = body.segment_s || 30;
    showResults(body, what);
  } catch (err) {
    $("results").replaceChildren();
    $("notice").hidden = true;
    $("more").hidden = true;
    setStatus(err.message, true);
  }
}

// -- the URL is the state --------------------------------------------------------------------------
function runFromUrl() {
  const p = stateFromUrl();
  const f = filterParams();
  const kk = parseInt(p.get("k"), 10) || 10;
  f.set("k", String(kk));
  if (p.get("similar")) {
    f.set("window", p.get("similar"));
    run(`/api/similar?${f}`, {}, `more like ${p.get("name") || "window " + p.get("similar")}`, kk);
  } else if (p.get("q")) {
    f.set("text", p.get("q"));
    run(`/api/search?${f}`, {}, `“${p.get("q")}”`, kk);
  } else {
    showLanding();
  }
}

function navigate(extra) {
  const p = filterParams();
  p.set("k", String(k()));
  for (const [key, value] of Object.entries(extra)) p.set(key, String(value));
  history.pushState(null, "", `?${p}`);
  runFromUrl();
}

$("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("query").value.trim();
  const audio = $("audio-file").files[0];
  const video = $("video-file").files[0];
  if (!audio && !video) {
    if (text) navigate({ q: text });
    else setStatus("type a query or choose a sound or video file", true);
    return;
  }
  const form = new FormData();
  if (audio) form.append("audio", audio);
  if (video) form.append("video", video);
  if (text) form.append("text", text);
  form.append("k", String(k()));
  form.append("target", $("target").value);
  for (const [name, value] of filterParams()) form.append(name, value);
  const what = [text && `“${text}”`, audio && `the sound of ${audio.name}`, video && `the video ${video.name}`]
    .filter(Boolean).join(" + ") + ($("target").value === "audio" ? " (sounds)" : "");
  history.pushState(null, "", "?");  // a file query cannot be kept in the URL
  run("/api/search", { method: "POST", body: form }, what, k());
});

$("more").addEventListener("click", () => {
  if (!current) return;
  const kk = Math.min(100, current.k + 10);
  $("k").value = String(kk);
  if (current.options && current.options.method === "POST") {
    current.options.body.set("k", String(kk));
    run(current.url, current.options, current.what, kk);
  } else {
    const p = new URLSearchParams(location.search);
    p.set("k", String(kk));
    history.replaceState(null, "", `?${p}`);
    runFromUrl();
  }
});
new IntersectionObserver((entries) => {  // more results on scroll
  if (entries.some((e) => e.isIntersecting) && !$("more").hidden && document.body.scrollHeight > innerHeight) $("more").click();
}).observe($("more"));

window.addEventListener("popstate", runFromUrl);

// -- keyboard: "/" types a query, arrows move between cards, Enter plays -----------------------------
document.addEventListener("keydown", (e) => {
  const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName);
  if (e.key === "/" && !typing) { e.preventDefault(); $("query").focus(); return; }
  if (typing) return;
  const cards = [...document.querySelectorAll("#results .card")];
  if (!cards.length) return;
  const i = cards.indexOf(document.activeElement);
  if (["ArrowRight", "ArrowDown", "j"].includes(e.key)) { e.preventDefault(); cards[Math.min(cards.length - 1, i + 1)].focus(); }
  if (["ArrowLeft", "ArrowUp", "k"].includes(e.key)) { e.preventDefault(); cards[Math.max(0, i - 1)].focus(); }
});

// -- landing: the collection -------------------------------------------------------------------------
let info = null;
function showLanding() {
  $("results").replaceChildren();
  $("notice").hidden = true;
  $("more").hidden = true;
  setStatus("");
  if (!info) return;
  $("landing").hidden = false;
  const kinds = Object.entries(info.suffixes).map(([s, n]) => `${n} ${s}`).join(", ");
  $("counts").textContent = `${info.files} videos (${kinds}), ${(info.total_duration_s / 60).toFixed(1)} minutes, ` +
    `${info.with_audio} with sound, ${info.windows} windows of ${info.window_s} s` +
    (info.bad_files ? `; ${info.bad_files} files could not be indexed` : "");
  const sample = $("sample");
  sample.replaceChildren();
  for (const v of info.sample) {
    const a = document.createElement("a");
    a.className = "card";
    a.href = v.file_url;
    a.target = "_blank";
    const img = document.createElement("img");
    img.className = "thumb";
    if (v.thumb_url) img.src = v.thumb_url;
    img.alt = v.name;
    const name = document.createElement("div");
    name.className = "body name";
    name.textContent = `${v.rel} · ${(v.duration || 0).toFixed(1)} s`;
    a.append(img, name);
    sample.appendChild(a);
  }
}

call("/api/info").then((i) => {
  info = i;
  $("info").textContent = `${i.files} videos, ${i.windows} windows of ${i.window_s} s` +
    (i.text_search ? "" : " (no vocabulary: text search unavailable)");
  if (!new URLSearchParams(location.search).toString()) showLanding();
}).catch((err) => setStatus(err.message, true));
runFromUrl();
