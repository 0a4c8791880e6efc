// nnlab studio: the page of `nnlab serve`. Plain DOM, no libraries; every text from the server is
// set as textContent, never parsed as HTML. Views by the location's hash:
//   #/models[/NAME]   predict / sample / translate with a served model (what it can do: /models)
//   #/runs            the runs of the served folder (GET /runs)
//   #/run?name=NAME   one run's curves, confusion matrix, per-class report, config and summary
//   #/compare?run=A&run=B   their curves overlaid and the settings they differ on
"use strict";

const $ = (id) => document.getElementById(id);
const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];
let models = [];
let current = null;          // the chosen model's /models entry
let lastImage = null;        // [blob, filename] of the image last classified, for Grad-CAM of another class
let sampling = null;         // AbortController of the sample being streamed
let moveFocus = false;       // after the first view, a change of view moves focus to its heading

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

function showError(error) { $("error").textContent = error ? String(error.message || error) : ""; }

async function getJSON(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({ detail: response.statusText }));
  if (!response.ok) throw new Error(typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
  return body;
}

const postJSON = (url, body) => getJSON(url, {
  method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
const percent = (p) => `${(100 * p).toFixed(1)}%`;
const modelURL = (what, name) => `/${what}/${encodeURIComponent(name)}`;
const runURL = (name) => `/runs/${name.split("/").map(encodeURIComponent).join("/")}`;
const number = (v, digits = 4) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(digits)) : "-");
// A setting or score as a cell: numbers to 6 significant digits, strings as they are, the rest as JSON.
const shown = (v) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(6))))
  : typeof v === "string" ? v : v === null || v === undefined ? "-" : JSON.stringify(v));

// ---- views ---------------------------------------------------------------------------------------

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const [view, ...rest] = path.split("/");
  showError("");
  if (view === "runs") return show("runs", loadRuns);
  if (view === "run" && params.get("name")) return show("run", () => loadRun(params.get("name")));
  if (view === "compare") return show("compare", () => loadCompare(params.getAll("run")));
  if (view === "models" || models.length) {
    return show("models", () => chooseModel(decodeURIComponent(rest.join("/")) || $("model").value));
  }
  return show("runs", loadRuns);
}

function show(name, load) {
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== `view-${name}`;
  for (const link of document.querySelectorAll("nav a")) {
    const on = link.id === `nav-${name === "models" ? "models" : "runs"}`;
    if (on) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  Promise.resolve(load()).catch(showError);
}

// On a change of view, focus goes to its heading unless it already is in that view (the model select).
function focusTitle(id) {
  if (moveFocus && !$(id).closest(".view").contains(document.activeElement)) $(id).focus();
}

// ---- models --------------------------------------------------------------------------------------

async function loadModels() {
  models = await getJSON("/models");
  const select = $("model");
  select.replaceChildren();
  for (const m of models) {
    select.append(el("option", { value: m.name, text: `${m.name} (${m.what}${m.model ? `, ${m.model}` : ""})` }));
  }
  $("model-info").textContent = models.length ? "" : "no models served: nnlab serve RUN_DIR ...";
}

function chooseModel(name) {
  const previous = current;
  current = models.find((m) => m.name === name) || models[0] || null;
  if (previous !== current) {  // another model: the last one's answers go
    for (const id of ["results", "text-results", "translations"]) $(id).replaceChildren();
    $("sample-text").textContent = "";
    $("cam-figure").hidden = true;
    $("label").textContent = "-";
    lastImage = null;
  }
  const can = (feature) => Boolean(current && current.features.includes(feature));
  if (current) $("model").value = current.name;
  $("panel-image").hidden = !(can("serve") && current.input_shape);
  $("panel-text").hidden = !(can("serve") && !current.input_shape);
  $("panel-sample").hidden = !can("sample");
  $("panel-translate").hidden = !can("translate");
  if (current) {
    const parts = [current.recipe, current.dataset, current.classes.length ? `${current.classes.length} classes` : ""];
    $("model-info").textContent = parts.filter(Boolean).join(" · ");
  }
  const options = (current && current.sample_options) || [];
  $("category-label").hidden = $("category").hidden = !options.includes("category");
  if (options.includes("category")) {
    $("category").replaceChildren(...current.classes.map((c) => el("option", { value: c, text: c })));
  }
  focusTitle("models-title");
}

// ---- images: predict and Grad-CAM ----------------------------------------------------------------

async function predictImage(blob, filename) {
  showError("");
  $("label").textContent = "...";
  lastImage = [blob, filename];
  const form = new FormData();
  form.append("file", blob, filename);
  try {
    const body = await getJSON(`${modelURL("predict", current.name)}?top_k=5`, { method: "POST", body: form });
    showTop(body.top);
  } catch (error) {
    $("label").textContent = "-";
    showError(error);
    return;
  }
  if (current.features.includes("cam")) {
    showCam($("label").textContent).catch((error) => { $("cam-figure").hidden = true; showError(error); });
  }
}

function showTop(top) {
  $("label").textContent = top[0]["class"];
  const table = $("results");
  table.replaceChildren(el("caption", { text: current.features.includes("cam")
    ? "Top classes: choose one to see where its evidence lies" : "Top classes" }));
  for (const t of top) {
    const row = table.insertRow();
    row.className = "result";
    row.dataset.class = t["class"];
    const name = current.features.includes("cam")
      ? el("button", { type: "button", class: "class-button", text: t["class"], "aria-pressed": "false" })
      : document.createTextNode(t["class"]);
    if (name.tagName === "BUTTON") name.addEventListener("click", () => showCam(t["class"]).catch(showError));
    barRow(row, name, t.probability);
  }
}

// A class, a bar as long as its probability, the probability: one row of a top-k table.
function barRow(row, name, probability) {
  row.insertCell().append(name);
  const bar = el("div", { class: "bar" });
  bar.style.width = percent(probability);
  const cell = row.insertCell();
  cell.className = "bar-cell";
  cell.append(bar);
  row.insertCell().textContent = percent(probability);
}

async function showCam(className) {
  const [blob, filename] = lastImage;
  const form = new FormData();
  form.append("file", blob, filename);
  const response = await fetch(`${modelURL("cam", current.name)}?class=${encodeURIComponent(className)}`,
                               { method: "POST", body: form });
  if (!response.ok) {
    const body = await response.json().catch(() => ({ detail: response.statusText }));
    throw new Error(body.detail);
  }
  const image = $("cam");
  if (image.src.startsWith("blob:")) URL.revokeObjectURL(image.src);
  image.src = URL.createObjectURL(await response.blob());
  image.alt = `Grad-CAM map: where the evidence for ${className} lies in the image`;
  const p = Number(response.headers.get("X-Probability"));
  $("cam-caption").textContent = `Grad-CAM for ${className} (p = ${p.toFixed(2)}): warm colours mark the evidence`;
  $("cam-figure").hidden = false;
  for (const row of $("results").querySelectorAll("tr.result")) {
    const chosen = row.dataset.class === className;
    row.classList.toggle("chosen", chosen);
    const button = row.querySelector("button");
    if (button) button.setAttribute("aria-pressed", String(chosen));
  }
}

function useFile(file) {
  if (!file) return;
  $("preview").src = URL.createObjectURL(file);
  $("preview").hidden = false;
  $("drop-text").hidden = true;
  predictImage(file, file.name || "pasted.png");
}

function setUpImagePanel() {
  const drop = $("drop");
  drop.addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", (e) => useFile(e.target.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    useFile(e.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (e) => {
    if ($("panel-image").hidden) return;
    const file = [...(e.clipboardData ? e.clipboardData.files : [])].find((f) => f.type.startsWith("image/"));
    if (file) { e.preventDefault(); useFile(file); }
  });
  // Drawing: white strokes on black, the polarity of MNIST, so the server needs no inversion.
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); };
  clear();
  let drawing = false;
  const point = (e) => {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height];
  };
  canvas.addEventListener("pointerdown", (e) => { drawing = true; ctx.beginPath(); ctx.moveTo(...point(e)); });
  canvas.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    ctx.lineWidth = 22; ctx.lineCap = "round"; ctx.lineJoin = "round"; ctx.strokeStyle = "#fff";
    ctx.lineTo(...point(e));
    ctx.stroke();
  });
  window.addEventListener("pointerup", () => { drawing = false; });
  $("clear").addEventListener("click", clear);
  $("predict-drawing").addEventListener("click",
    () => canvas.toBlob((blob) => predictImage(blob, "drawing.png"), "image/png"));
}

// ---- text: classify with attention, sample, translate --------------------------------------------

async function classifyTexts() {
  showError("");
  const inputs = $("texts").value.split("\n").map((s) => s.trim()).filter(Boolean);
  if (!inputs.length) return showError("type at least one line");
  const box = $("text-results");
  try {
    const body = await postJSON(`${modelURL("predict", current.name)}?top_k=3`, { inputs });
    box.replaceChildren(...body.results.map(textResult));
  } catch (error) { showError(error); }
}

function textResult(result) {
  const table = el("table", { class: "bars" });
  for (const t of result.top) {
    const row = table.insertRow();
    row.className = "text-top";
    barRow(row, t["class"], t.probability);
  }
  const block = el("div", { class: "text-result" }, el("h4", { text: result.input }), table);
  if (result.attention) {
    const peak = Math.max(...result.attention.map((a) => a.weight), 1e-9);
    const strip = el("p", { class: "attention", "aria-label": "attention weight of each token" });
    for (const a of result.attention) {
      const span = el("span", { text: a.token, title: `attention ${a.weight.toFixed(3)}` });
      span.style.backgroundColor = `rgba(214, 39, 40, ${(0.85 * a.weight / peak).toFixed(3)})`;
      strip.append(span);
    }
    block.append(strip);
  }
  return block;
}

async function sample() {
  showError("");
  const value = (id) => $(id).value.trim();
  const body = { length: Number(value("length") || 300), temperature: Number(value("temperature") || 0.8),
                 seed: Number(value("seed") || 0) };
  if (value("prime")) body.prime = $("prime").value;
  if (value("top-k")) body.top_k = Number(value("top-k"));
  if (!$("category").hidden) body.category = $("category").value;
  const out = $("sample-text");
  out.textContent = "";
  sampling = new AbortController();
  $("sample").disabled = true;
  $("stop").disabled = false;
  try {
    const response = await fetch(modelURL("sample", current.name), {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
      signal: sampling.signal });
    if (!response.ok) {
      const problem = await response.json().catch(() => ({ detail: response.statusText }));
      throw new Error(problem.detail);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { done, value: chunk } = await reader.read();
      if (done) break;
      out.textContent += decoder.decode(chunk, { stream: true });
    }
    out.textContent += decoder.decode();
    out.dataset.done = "true";
  } catch (error) {
    if (error.name !== "AbortError") showError(error);
  } finally {
    $("sample").disabled = false;
    $("stop").disabled = true;
    sampling = null;
  }
}

async function translateSentences() {
  showError("");
  const inputs = $("sources").value.split("\n").map((s) => s.trim()).filter(Boolean);
  if (!inputs.length) return showError("type at least one sentence");
  try {
    const body = await postJSON(modelURL("translate", current.name), { inputs, beam: Number($("beam").value || 1) });
    $("translations").replaceChildren(...body.results.map((r) => el("div", { class: "text-result" },
      el("h4", { text: `${r.source} → ${r.translation}` }), attentionMatrix(r.attention))));
  } catch (error) { showError(error); }
}

function attentionMatrix(attention) {
  const table = el("table", { class: "matrix" },
    el("caption", { text: "Attention: each output token (row) on the source tokens (columns)" }));
  const head = table.insertRow();
  head.append(el("th", { text: "" }), ...attention.source.map((s) => el("th", { scope: "col", text: s })));
  attention.weights.forEach((weights, t) => {
    const row = table.insertRow();
    row.append(el("th", { scope: "row", text: attention.output[t] }));
    for (const w of weights) {
      const cell = row.insertCell();
      cell.textContent = w.toFixed(2);
      cell.style.backgroundColor = `rgba(31, 119, 180, ${w.toFixed(3)})`;
      if (w > 0.55) cell.style.color = "#fff";
    }
  });
  return el("div", { class: "scroll" }, table);
}

// ---- runs ----------------------------------------------------------------------------------------

async function loadRuns() {
  const body = await getJSON("/runs");
  $("runs-root").textContent = body.root ? `in ${body.root}` : "(no folder of runs: nnlab serve --runs DIR)";
  const table = $("runs-table");
  const heads = ["pick", "name", "recipe", "kind", "started", "status", "epochs", "metric", "seconds"];
  table.replaceChildren(el("caption", { class: "muted", text: `${body.runs.length} runs, oldest first` }));
  const head = table.insertRow();
  head.append(...heads.map((h) => el("th", { scope: "col", text: h })));
  for (const r of body.runs) {
    const row = table.insertRow();
    row.className = `run run-${r.status}`;
    row.dataset.name = r.name;
    const tick = el("input", { type: "checkbox", "aria-label": `compare ${r.name}` });
    tick.addEventListener("change", updateCompareButton);
    row.insertCell().append(tick);
    const link = el("a", { href: `#/run?name=${encodeURIComponent(r.name)}`, text: r.name });
    row.insertCell().append(link);
    for (const key of ["recipe", "kind", "started"]) row.insertCell().textContent = r[key] || "-";
    const status = row.insertCell();
    status.append(el("span", { class: `status status-${r.status}`, text: r.status }));
    row.insertCell().textContent = r.epochs;
    row.insertCell().textContent = r.value === null ? "-" : `${r.metric} ${r.value.toFixed(4)}`;
    row.insertCell().textContent = r.seconds === null ? "-" : r.seconds.toFixed(1);
    if (r.why && r.status !== "finished") {
      const why = table.insertRow();
      why.className = "why-row";
      why.insertCell();
      const cell = why.insertCell();
      cell.colSpan = heads.length - 1;
      cell.className = "why";
      cell.textContent = r.why;
    }
  }
  updateCompareButton();
  focusTitle("runs-title");
}

function tickedRuns() {
  return [...$("runs-table").querySelectorAll("tr.run")].filter((row) => row.querySelector("input").checked)
    .map((row) => row.dataset.name);
}

function updateCompareButton() { $("compare").disabled = tickedRuns().length < 2; }

// The families of curves in metrics.jsonl rows: "loss" from train_loss and valid_loss, "acc" from ...
function families(rows) {
  const found = new Map();
  for (const row of rows) {
    for (const [key, v] of Object.entries(row)) {
      const m = /^(train|valid)_(.+)$/.exec(key);
      if (!m || typeof v !== "number" || /_per_s$/.test(key)) continue;
      if (!found.has(m[2])) found.set(m[2], new Set());
      found.get(m[2]).add(m[1]);
    }
  }
  return found;
}

// One line chart: series [{label, colour, dashed, points: [[x, y], ...]}], x the epoch.
function chart(title, series) {
  const W = 440, H = 240, L = 52, R = 12, T = 26, B = 34;
  const all = series.flatMap((s) => s.points);
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
  const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title} against epoch` });
  const label = svg("text", { x: L, y: 17, "font-size": 13, "font-weight": 600, fill: "#1d2125" });
  label.textContent = title;
  root.append(label);
  for (let i = 0; i <= 4; i++) {
    const y = y0 + (y1 - y0) * i / 4;
    root.append(svg("line", { x1: L, x2: W - R, y1: sy(y), y2: sy(y), stroke: "#e3e7ea" }));
    const tick = svg("text", { x: L - 6, y: sy(y) + 4, "font-size": 11, "text-anchor": "end", fill: "#5b6670" });
    tick.textContent = Math.abs(y) >= 100 ? y.toFixed(0) : y.toPrecision(3);
    root.append(tick);
  }
  const step = Math.max(1, Math.ceil((x1 - x0) / 8));
  for (let x = Math.ceil(x0); x <= x1; x += step) {
    const tick = svg("text", { x: sx(x), y: H - B + 16, "font-size": 11, "text-anchor": "middle", fill: "#5b6670" });
    tick.textContent = x;
    root.append(tick);
  }
  const axis = svg("text", { x: (L + W - R) / 2, y: H - 4, "font-size": 11, "text-anchor": "middle", fill: "#5b6670" });
  axis.textContent = "epoch";
  root.append(axis);
  for (const s of series) {
    const d = s.points.map((p, i) => `${i ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
    root.append(svg("path", { d, fill: "none", stroke: s.colour, "stroke-width": 2,
                              "stroke-dasharray": s.dashed ? "6 4" : "none" }));
    for (const p of s.points) root.append(svg("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: s.colour }));
  }
  const legend = el("ul", { class: "legend" });
  for (const s of series) {
    const swatch = el("span", { class: s.dashed ? "swatch dashed" : "swatch" });
    swatch.style.borderTopColor = s.colour;
    legend.append(el("li", {}, swatch, s.label));
  }
  return el("figure", { class: "chart" }, root, legend);
}

// Curves of several runs ({name: rows}): one chart per family, one colour per run, valid solid, train dashed.
function curves(byRun) {
  const names = Object.keys(byRun);
  const seen = new Map();
  for (const rows of Object.values(byRun)) {
    for (const [family, splits] of families(rows)) {
      if (!seen.has(family)) seen.set(family, new Set());
      for (const split of splits) seen.get(family).add(split);
    }
  }
  const box = el("div", { class: "charts" });
  for (const [family, splits] of seen) {
    const series = [];
    names.forEach((name, k) => {
      for (const split of ["valid", "train"]) {
        if (!splits.has(split)) continue;
        const points = byRun[name].filter((r) => typeof r[`${split}_${family}`] === "number")
          .map((r, i) => [typeof r.epoch === "number" ? r.epoch : i + 1, r[`${split}_${family}`]]);
        if (points.length) {
          series.push({ label: names.length > 1 ? `${name} (${split})` : split, colour: COLOURS[k % COLOURS.length],
                        dashed: split === "train", points });
        }
      }
    });
    if (series.length) box.append(chart(family, series));
  }
  return box.childElementCount ? box : el("p", { class: "muted", text: "no curves yet (metrics.jsonl has no rows)" });
}

function confusion(summary) {
  const classes = summary.classes, matrix = summary.confusion;
  const table = el("table", { class: "matrix" },
    el("caption", { text: "Confusion matrix on the test split: rows true, columns predicted" }));
  const head = table.insertRow();
  head.append(el("th", { text: "true \\ predicted" }), ...classes.map((c) => el("th", { scope: "col", text: c })));
  matrix.forEach((counts, i) => {
    const total = counts.reduce((a, b) => a + b, 0) || 1;
    const row = table.insertRow();
    row.append(el("th", { scope: "row", text: classes[i] }));
    counts.forEach((count, j) => {
      const cell = row.insertCell();
      cell.textContent = count;
      const share = count / total;
      cell.style.backgroundColor = i === j ? `rgba(31, 122, 77, ${share.toFixed(3)})` : `rgba(214, 39, 40, ${share.toFixed(3)})`;
      if (share > 0.6) cell.style.color = "#fff";
    });
  });
  return el("div", { class: "scroll" }, table);
}

function perClass(report) {
  const table = el("table", { class: "numbers" },
    el("caption", { text: "Per class on the test split" }));
  const head = table.insertRow();
  head.append(...["class", "precision", "recall", "F1", "support"].map((h) => el("th", { scope: "col", text: h })));
  for (const [name, r] of Object.entries(report)) {
    const row = table.insertRow();
    for (const v of [name, number(r.precision, 3), number(r.recall, 3), number(r.f1, 3), r.support]) {
      row.insertCell().textContent = v;
    }
  }
  return el("div", { class: "scroll" }, table);
}

function keyValues(caption, object) {
  const table = el("table", { class: "kv" }, el("caption", { text: caption }));
  const flat = (prefix, value) => {
    if (value && typeof value === "object" && !Array.isArray(value) && Object.keys(value).length) {
      for (const [k, v] of Object.entries(value)) flat(`${prefix}${k}.`, v);
      return;
    }
    const row = table.insertRow();
    row.insertCell().textContent = prefix.slice(0, -1);
    row.insertCell().textContent = shown(value);
  };
  for (const [k, v] of Object.entries(object)) flat(`${k}.`, v);
  return el("div", { class: "scroll" }, table);
}

const BULKY = new Set(["confusion", "per_class", "classes", "most_confused", "examples", "versions", "hardware"]);

async function loadRun(name) {
  const run = await getJSON(runURL(name));
  $("run-title").textContent = run.name;
  const status = $("run-status");
  status.replaceChildren(el("span", { class: `status status-${run.status}`, text: run.status }),
    ` ${run.recipe || "-"} · ${run.kind || "-"} · ${run.epochs} epochs`,
    run.value === null ? "" : ` · ${run.metric} ${run.value.toFixed(4)}`,
    run.why && run.status !== "finished" ? ` · ${run.why}` : "");
  if (run.model) status.append(" · ", el("a", { href: `#/models/${encodeURIComponent(run.model)}`, text: "try it" }));
  const body = $("run-body");
  body.replaceChildren(el("h3", { text: "Curves" }), curves({ [run.name]: run.metrics }));
  const summary = run.summary || {};
  if (Array.isArray(summary.confusion) && Array.isArray(summary.classes)) {
    body.append(el("h3", { text: "Confusion matrix" }), confusion(summary));
  }
  if (summary.per_class) body.append(el("h3", { text: "Precision and recall" }), perClass(summary.per_class));
  const files = el("div", { class: "row" });
  if (run.summary) {
    const headline = Object.fromEntries(Object.entries(summary).filter(([k]) => !BULKY.has(k)));
    files.append(el("div", {}, el("h3", { text: "Summary" }), keyValues("summary.json", headline)));
  }
  if (run.config) files.append(el("div", {}, el("h3", { text: "Config" }), keyValues("config.json", run.config)));
  body.append(files);
  if (run.summary) {
    body.append(el("details", {}, el("summary", { text: "summary.json as written" }),
                   el("pre", { text: JSON.stringify(run.summary, null, 1) })));
  }
  focusTitle("run-title");
}

async function loadCompare(names) {
  const query = names.map((n) => `run=${encodeURIComponent(n)}`).join("&");
  const result = await getJSON(`/compare?${query}`);
  $("compare-title").textContent = `Compare ${result.runs.join(" and ")}`;
  const body = $("compare-body");
  body.replaceChildren(el("h3", { text: "Curves (valid solid, train dashed)" }), curves(result.metrics));
  const table = el("table", { class: "numbers" }, el("caption", { text: "Settings that differ, and results" }));
  const head = table.insertRow();
  head.append(el("th", { scope: "col", text: "setting" }), ...result.runs.map((n) => el("th", { scope: "col", text: n })));
  const line = (label, values) => {
    const row = table.insertRow();
    row.insertCell().textContent = label;
    for (const v of values) row.insertCell().textContent = shown(v);
  };
  for (const [key, values] of Object.entries(result.differences)) line(key, values);
  const results = result.runs.map((n) => result.results[n]);
  line("status", results.map((r) => r.status));
  line("epochs done", results.map((r) => r.epochs));
  line("result", results.map((r) => (r.value === null ? "-" : `${r.metric} ${number(r.value)}`)));
  body.append(el("div", { class: "scroll" }, table));
  focusTitle("compare-title");
}

// ---- start ---------------------------------------------------------------------------------------

function start() {
  setUpImagePanel();
  $("model").addEventListener("change", () => { location.hash = `#/models/${encodeURIComponent($("model").value)}`; });
  $("classify").addEventListener("click", classifyTexts);
  $("sample").addEventListener("click", sample);
  $("stop").addEventListener("click", () => sampling && sampling.abort());
  $("translate").addEventListener("click", translateSentences);
  $("compare").addEventListener("click", () => {
    location.hash = `#/compare?${tickedRuns().map((n) => `run=${encodeURIComponent(n)}`).join("&")}`;
  });
  window.addEventListener("hashchange", () => { moveFocus = true; route(); });
  loadModels().then(route, (error) => { showError(error); route(); });
}

start();
