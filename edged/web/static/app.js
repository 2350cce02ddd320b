// edged teach page. Original code, Apache-2.0. Every action is a command: POST /api/cmd/<name>.
"use strict";

const $ = (id) => document.getElementById(id);
const labels = new Set();
let status = {};
let curve = [];

function say(text) { $("message").textContent = text || ""; }

// With [web] token: the page opened as /?token=... gets a page key in its HTML, kept in this origin's storage (no
// page of another port can read it), and sent with every API request beside the session cookie; the token leaves
// the address bar.
const pageKey = (() => {
  const given = document.querySelector('meta[name="edged-page-key"]').content;
  if (given) localStorage.setItem("edged-page-key", given);
  if (new URLSearchParams(location.search).has("token")) history.replaceState(null, "", location.pathname);
  return localStorage.getItem("edged-page-key") || "";
})();
function withKey(url) { return pageKey ? `${url}${url.includes("?") ? "&" : "?"}key=${encodeURIComponent(pageKey)}` : url; }
$("live").src = withKey("/api/live.mjpg");

async function api(name, payload) {
  const response = await fetch(`/api/cmd/${name}`, {
    method: "POST", headers: { "Content-Type": "application/json", "X-Edged-Key": pageKey },
    body: JSON.stringify(payload || {}),
  });
  const reply = await response.json();
  if (!reply.ok) { say(`${name}: ${reply.error}`); throw new Error(reply.error); }
  say("");
  return reply.result;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

// -- live view --------------------------------------------------------------------------------
// With several sources ([[sources]]) a camera is chosen: the live view, the predictions and captures follow it.
function camera() { return $("camera").hidden ? null : $("camera").value; }
function here() { return camera() === null ? {} : { source: camera() }; }

function renderCameras(sources) {
  const select = $("camera");
  const names = Object.keys(sources || {});
  if (!names.length || select.options.length) return;
  select.replaceChildren(...names.map((n) => el("option", { value: n }, `${n} (${sources[n].state})`)));
  select.hidden = false;
  $("live").src = withKey(`/api/live.mjpg?source=${encodeURIComponent(names[0])}`);
}
$("camera").addEventListener("change", () => {
  $("live").src = withKey(`/api/live.mjpg?source=${encodeURIComponent(camera())}`);
});

// A sound source: a level meter under the spectrogram (status.sound: the newest window's level and loudness).
function renderMeter(sound) {
  const meter = $("meter");
  meter.hidden = !sound;
  if (!sound) return;
  const fill = meter.querySelector(".fill");
  fill.style.width = `${Math.max(0, Math.min(100, (sound.level_db + 80) / 80 * 100))}%`;
  meter.classList.toggle("loud", sound.loud);
  $("level").textContent = `${sound.level_db.toFixed(0)} dB${sound.loud ? ", sound" : ""}`;
}

function renderPredictions(latest) {
  const box = $("predictions");
  box.replaceChildren();
  const canvas = $("boxes");
  canvas.width = canvas.clientWidth; canvas.height = canvas.clientHeight;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  for (const [head, p] of Object.entries(latest)) {
    if (camera() !== null && p.source !== camera()) continue;
    const bars = Object.entries(p.scores || {}).sort((a, b) => b[1] - a[1]).slice(0, 6).map(([label, score]) =>
      el("div", { class: "bar" }, el("span", { class: "fill", style: `width:${Math.round(score * 120)}px` }),
         `${label} ${score.toFixed(2)}`));
    const novelty = p.novelty === undefined ? "" : ` novelty ${p.novelty.toFixed(2)}`;
    box.append(el("div", { class: "head", "data-head": head, "data-pos": p.pos, "data-label": p.label },
      el("div", {}, `${head}: `, el("span", { class: "label" }, p.label), ` ${p.score.toFixed(2)}${novelty}`),
      ...bars));
    for (const b of p.boxes || []) {
      const [x1, y1, x2, y2] = b.box;
      ctx.strokeStyle = "#e63946"; ctx.lineWidth = 2;
      ctx.strokeRect(x1 * canvas.width, y1 * canvas.height, (x2 - x1) * canvas.width, (y2 - y1) * canvas.height);
      ctx.fillStyle = "#e63946"; ctx.fillText(`${b.label} ${b.score.toFixed(2)}`, x1 * canvas.width + 3, y1 * canvas.height + 12);
    }
  }
}

function renderStates(scene) {
  const states = (scene && scene.states) || {};
  const gate = (scene && scene.gate) || {};
  const skipped = gate.skipped_still || 0;
  const rows = Object.entries(states).map(([key, s]) =>
    el("div", { class: "state", "data-key": key, "data-label": s.label },
      `${key}: `, el("span", { class: "label" }, s.label),
      ` since ${new Date(s.since * 1000).toLocaleTimeString()} (${s.score.toFixed(2)})`));
  rows.push(el("div", { class: "hint" }, `gate ${gate.mode || "?"}: ${skipped} frames skipped as still`));
  $("states").replaceChildren(...rows);
}

function renderSceneEvents(list) {
  $("scene-events").replaceChildren(...list.map((e) => {
    const when = new Date(e.start * 1000).toLocaleTimeString();
    const span = e.end ? `${Math.round(e.end - e.start)} s` : "now";
    return el("div", { class: "scene-event", "data-id": e.id, "data-label": e.label },
      el("img", { src: withKey(`/api/event/${e.id}.jpg`), alt: e.label }),
      `${e.label}${e.source ? " at " + e.source : ""}${e.region ? " in " + e.region : ""} ${when}, ${span}, top ${e.top_score.toFixed(2)} `,
      el("button", { class: "wrong", title: "that was wrong: teach this frame as background", onclick: () => markWrong(e) },
        "wrong"));
  }));
}

// "that was wrong": the event's best frame becomes an example of background (the same command as MQTT and the CLI)
async function markWrong(e) {
  const result = await api("wrong", { event: e.id });
  say(`${e.label} at ${new Date(e.start * 1000).toLocaleTimeString()} stored as ${result.label} (example ${result.examples.join(", ")})`);
}

// -- teach ---------------------------------------------------------------------------------------
const thumbCache = new Map();  // label -> its <img> elements, moved into each redraw (loaded already: no blank flash)
async function thumbs(label, into) {
  const cached = thumbCache.get(label) || [];
  into.replaceChildren(...cached);
  const result = await api("examples", { label, limit: 8 });
  const byId = new Map(cached.map((img) => [img.dataset.id, img]));
  const images = result.examples.map((ex) => byId.get(String(ex.id)) || el("img", {
    src: withKey(`/api/example/${ex.id}.jpg`), title: `example ${ex.id}: click to delete`, "data-id": ex.id,
    onclick: async () => { await api("delete", { ids: [ex.id] }); refreshLabels(); },
  }));
  thumbCache.set(label, images);
  into.replaceChildren(...images);
}

function holdButton(label) {
  let held = false;
  const button = el("button", { class: "hold", "data-label": label }, `hold: ${label}`);
  const loop = async () => {
    while (held) {
      try { await api("capture", { label, count: 1, interval_ms: 0, ...here() }); } catch (e) { held = false; }
      await new Promise((r) => setTimeout(r, 150));
    }
    refreshLabels();
  };
  const down = (e) => { e.preventDefault(); if (!held) { held = true; button.classList.add("held"); loop(); } };
  const up = () => { held = false; button.classList.remove("held"); };
  button.addEventListener("pointerdown", down);
  button.addEventListener("pointerup", up);
  button.addEventListener("pointerleave", up);
  return button;
}

function refreshLabels() {
  const counts = status.examples || {};
  for (const l of Object.keys(counts)) labels.add(l);
  const list = $("labels");
  list.replaceChildren();
  for (const label of [...labels].sort()) {
    const thumbBox = el("div", { class: "thumbs" });
    const row = el("div", { class: "label-row", "data-label": label },
      el("div", { class: "row" },
        el("span", { class: "name" }, label), el("span", { class: "count" }, `${counts[label] || 0} examples`),
        holdButton(label),
        el("button", { class: "capture10", onclick: async () => {
          const reply = await api("capture", { label, count: 10, interval_ms: 250, ...here() });
          if (reply.warnings) say(reply.warnings.join(" "));
          refreshLabels(); } }, "capture 10"),
        el("button", { class: "rename", onclick: async () => {
          const to = prompt(`rename ${label} to`); if (!to) return;
          const all = await api("examples", { label, limit: 10000 });
          if (all.examples.length) await api("relabel", { ids: all.examples.map((e) => e.id), label: to });
          labels.delete(label); labels.add(to); refreshLabels(); } }, "rename"),
        el("button", { class: "forget", onclick: async () => {
          if (!confirm(`forget every example of ${label}?`)) return;
          await api("forget", { label }); labels.delete(label); refreshLabels(); } }, "forget")),
      thumbBox);
    list.append(row);
    if (counts[label]) thumbs(label, thumbBox).catch(() => {});
  }
  renderReview(lastReview);
}

let lastReview = [];
function renderReview(items) {
  lastReview = items || [];
  $("review").replaceChildren(...lastReview.slice().reverse().slice(0, 12).map((item) =>
    el("div", { class: "review-item", "data-id": item.id },
      el("img", { src: withKey(`/api/review/${item.id}.jpg`), title: `${item.head}: ${item.label} (${item.reason})` }),
      ...[...labels].sort().map((l) => el("button", { onclick: async () => {
        await api("label", { review_id: item.id, label: l }); lastReview = lastReview.filter((x) => x.id !== item.id);
        refreshLabels(); } }, l)),
      el("button", { onclick: async () => {
        await api("discard", { review_id: item.id }); lastReview = lastReview.filter((x) => x.id !== item.id);
        renderReview(lastReview); } }, "×"))));
}

// -- train ---------------------------------------------------------------------------------------
function drawCurves() {
  const c = $("curves"), ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  ctx.strokeStyle = "#999"; ctx.strokeRect(30, 10, c.width - 40, c.height - 30);
  const series = { loss: "#e63946", accuracy: "#457b9d", val_accuracy: "#2a9d8f", val_loss: "#f4a261" };
  const n = Math.max(curve.length, 2);
  const top = Math.max(1, ...curve.flatMap((p) => Object.keys(series).map((k) => p[k] || 0)));
  let legend = 35;
  for (const [key, colour] of Object.entries(series)) {
    const pts = curve.map((p, i) => [i, p[key]]).filter(([, v]) => v !== undefined);
    if (!pts.length) continue;
    ctx.strokeStyle = colour; ctx.beginPath();
    pts.forEach(([i, v], j) => {
      const x = 30 + (c.width - 40) * i / (n - 1), y = 10 + (c.height - 30) * (1 - v / top);
      if (j) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    });
    ctx.stroke(); ctx.fillStyle = colour; ctx.fillText(key, legend, c.height - 6); legend += 80;
  }
}

function renderReport(result) {
  const m = result.metrics || {};
  const parts = [el("div", {}, `version ${result.version}${result.active ? ", predicting" : ""}`)];
  if (m.cv_accuracy !== undefined) parts.push(el("div", { id: "cv-accuracy" }, `cross-validated accuracy ${m.cv_accuracy} (${m.chosen})`));
  if (m.fine_tune) parts.push(el("div", {}, `fine-tuning: ${m.fine_tune}`));
  const report = m.report;
  if (report) {
    const header = el("tr", {}, el("th", {}, "true \\ predicted"), ...report.classes.map((c) => el("th", {}, c)));
    const rows = report.confusion.map((row, i) => el("tr", {}, el("th", {}, report.classes[i]),
      ...row.map((v) => el("td", {}, String(v)))));
    parts.push(el("table", { id: "confusion" }, header, ...rows));
    parts.push(el("div", {}, "per class: " + Object.entries(report.per_class_accuracy).map(([k, v]) => `${k} ${v}`).join(", ")));
    for (const w of [...report.warnings, ...report.advice]) parts.push(el("div", { class: "hint" }, w));
  }
  $("train-result").replaceChildren(...parts);
}

$("train").addEventListener("click", async () => {
  curve = []; drawCurves(); $("train-result").textContent = "training…";
  const payload = { head: $("train-head").value, mode: $("train-mode").value };
  if ($("train-epochs").value) payload.epochs = Number($("train-epochs").value);
  try { renderReport(await api("train", payload)); } catch (e) { $("train-result").textContent = String(e.message); }
  refreshModels();
});

// -- models --------------------------------------------------------------------------------------
function metricsText(m) {
  const parts = [];
  if (m.cv_accuracy !== undefined) parts.push(`cross-validated accuracy ${(100 * m.cv_accuracy).toFixed(1)} %`);
  if (m.val_accuracy !== undefined) parts.push(`validation accuracy ${(100 * m.val_accuracy).toFixed(1)} %`);
  if (m.val_iou !== undefined) parts.push(`validation IoU ${m.val_iou.toFixed(3)}`);
  if (m.chosen) parts.push(m.chosen);
  if (m.fine_tune) parts.push(`fine-tune ${m.fine_tune.split(";")[0]}`);
  return parts.join(", ");
}

async function refreshModels() {
  const result = await api("models", {});
  const box = $("models");
  box.replaceChildren();
  for (const [head, info] of Object.entries(result.heads)) {
    if (!info.versions.length && !info.models.length) continue;
    const mark = (v) => v.predicts ? el("strong", { class: "predicts" }, " — predicting") : "";
    const trained = (v) => el("div", { class: "row version", "data-version": v.version, "data-predicts": v.predicts },
      `trained ${v.version}`, mark(v), ` ${metricsText(v.metrics)}`);
    const model = (v) => el("div", { class: "row model", "data-version": v.version, "data-predicts": v.predicts },
      `exported model ${v.version}${v.from_version ? " (of trained " + v.from_version + ")" : ""}`, mark(v),
      ` ${v.quantization || ""}, parity ${v.parity ? v.parity.value : "?"}${v.bytes ? ", " + (v.bytes / 1e6).toFixed(1) + " MB" : ""}`,
      v.predicts ? "" : el("button", { onclick: async () => { await api("activate", { model: head, version: v.version }); refreshModels(); } }, "serve this"));
    const what = !info.active ? "not predicting" : info.serving_model ? "predicting from an exported model" : "predicting from its trained version";
    box.append(el("h3", {}, `${head} (${what})`),
      ...info.versions.slice().reverse().map(trained), ...info.models.slice().reverse().map(model),
      el("div", { class: "row" },
        el("button", { onclick: async () => { say(`exporting ${head}…`); await api("export", { head, quantize: $("export-quantize").value }); refreshModels(); } }, "export"),
        el("button", { onclick: async () => { await api("rollback", { model: head }); refreshModels(); } }, "rollback"),
        el("button", { onclick: async () => { const active = new Set(status.active || []); active.add(head);
          await api("activate", { heads: [...active] }); refreshModels(); } }, "predict with it")));
  }
}
$("refresh-models").addEventListener("click", refreshModels);

$("add-label").addEventListener("click", () => {
  const name = $("new-label").value.trim();
  if (name) { labels.add(name); $("new-label").value = ""; refreshLabels(); }
});

// -- events ------------------------------------------------------------------------------------------
const events = new EventSource(withKey("/api/events"));
events.addEventListener("predictions", (e) => renderPredictions(JSON.parse(e.data)));
events.addEventListener("sound", (e) => renderMeter(JSON.parse(e.data)));
events.addEventListener("status", (e) => {
  const before = JSON.stringify(status.examples);
  status = JSON.parse(e.data);
  $("device").textContent = status.device;
  $("state").textContent = `${status.state}, source ${status.source.state}${status.job ? ", " + status.job : ""}`;
  if (JSON.stringify(status.examples) !== before) refreshLabels();
  renderCameras(status.sources);
  renderMeter(status.sound);
  renderStates(status.scene);
});
events.addEventListener("scene_events", (e) => renderSceneEvents(JSON.parse(e.data).events));
events.addEventListener("progress", (e) => {
  const msg = JSON.parse(e.data);
  if (msg.command !== "train" && msg.command !== "export") return;
  const p = msg.progress || {};
  if (p.epoch !== undefined) { curve.push(p); drawCurves(); }
  $("train-result").textContent = p.step || `${p.phase} ${p.epoch || ""}/${p.epochs || ""}`;
});
events.addEventListener("review", (e) => renderReview(JSON.parse(e.data).items));
refreshModels().catch(() => {});
