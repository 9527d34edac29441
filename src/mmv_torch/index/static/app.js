"use strict";
// The search page: a text query, an audio upload and "more like this", all through the JSON API.
const $ = (id) => document.getElementById(id);

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

function showResults(results, what) {
  const list = $("results");
  list.replaceChildren();
  setStatus(results.length ? `${results.length} hits for ${what}` : `no hits for ${what}`);
  for (const hit of results) {
    const item = $("hit").content.firstElementChild.cloneNode(true);
    const name = hit.path.split("/").pop();
    item.dataset.path = hit.path;
    item.querySelector(".thumb").src = hit.thumb_url;
    item.querySelector(".thumb").alt = name;
    item.querySelector(".path").textContent = name;
    item.querySelector(".path").title = hit.path;
    item.querySelector(".span").textContent = `${hit.start.toFixed(1)}–${hit.end.toFixed(1)} s`;
    item.querySelector(".score").textContent = hit.score.toFixed(3);
    const player = item.querySelector(".player");
    const play = () => {
      if (!player.src) player.src = hit.media_url;  // the #t=start,end fragment plays the segment
      player.hidden = false;
      player.play().catch(() => {});
    };
    item.querySelector(".play").addEventListener("click", play);
    item.querySelector(".thumb").addEventListener("click", play);
    item.querySelector(".more").addEventListener("click", () =>
      run(`/api/similar?window=${hit.window}&k=${k()}`, {}, `more like ${name}`));
    list.appendChild(item);
  }
}

function k() {
  return Math.max(1, Math.min(100, parseInt($("k").value, 10) || 10));
}

async function run(url, options, what) {
  setStatus(`searching ${what}…`);
  try {
    const body = await call(url, options);
    showResults(body.results, what);
  } catch (err) {
    $("results").replaceChildren();
    setStatus(err.message, true);
  }
}

$("text-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("query").value.trim();
  if (text) run(`/api/search?text=${encodeURIComponent(text)}&k=${k()}`, {}, `“${text}”`);
});

$("audio-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = $("audio-file").files[0];
  if (!file) { setStatus("choose an audio file first", true); return; }
  const form = new FormData();
  form.append("audio", file);
  form.append("k", String(k()));
  run("/api/search", { method: "POST", body: form }, `the sound of ${file.name}`);
});

call("/api/info").then((info) => {
  $("info").textContent = `${info.files} videos, ${info.windows} windows of ${info.window_s} s` +
    (info.text_search ? "" : " (no vocabulary: text search unavailable)");
}).catch((err) => setStatus(err.message, true));
