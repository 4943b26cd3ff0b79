// The review page: uses only the HTTP interface of formats/review.md. No framework, no build.
"use strict";

const TOKEN = document.querySelector('meta[name="clipdata-token"]').content;
const REJECTED = "_rejected";
const $ = (id) => document.getElementById(id);

const S = {
  items: [],            // the shown items, in shown order
  classes: [],
  cursor: 0, anchor: 0, selected: new Set(),  // positions in S.items
  undo: [],             // per action, a promise of the rows it saved (each knows its previous value)
  typed: "",            // the class filter typed on the keyboard (more than 9 classes)
  sort: null,           // {label, scores: Map(index -> similarity)} after a search or "more like this"
  chain: Promise.resolve(),  // the saves, in key order
  pending: 0,
};

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

async function api(method, url, body) {
  const opts = {method, headers: {}, credentials: "same-origin"};
  if (method !== "GET") {
    opts.headers["x-clipdata-token"] = TOKEN;
    opts.headers["content-type"] = "application/json";
    opts.body = JSON.stringify(body === undefined ? {} : body);
  }
  S.pending++; document.body.dataset.pending = S.pending;
  try {
    const r = await fetch(url, opts);
    const data = await r.json().catch(() => ({error: r.statusText}));
    if (!r.ok) throw new Error(data.error || r.statusText);
    return data;
  } finally {
    S.pending--; document.body.dataset.pending = S.pending;
  }
}

function note(text, error) {
  const s = $("saved");
  s.textContent = text;
  s.className = error ? "error" : "";
}

// ---- loading and drawing --------------------------------------------------------------
async function load() {
  const keep = S.items[S.cursor] && S.items[S.cursor].path;
  const p = new URLSearchParams({filter: $("f-state").value});
  for (const [key, id] of [["class", "f-class"], ["min", "f-min"], ["max", "f-max"]]) {
    if ($(id).value !== "") p.set(key, $(id).value);
  }
  const data = await api("GET", "/api/items?" + p);
  if (!S.classes.length) {
    S.classes = data.classes;
    for (const c of S.classes) $("f-class").append(el("option", {value: c, text: c}));
  }
  let items = data.items;
  if (S.sort) {
    const sc = S.sort.scores;
    items = items.filter((it) => sc.has(it.index)).sort((a, b) => sc.get(b.index) - sc.get(a.index));
  }
  S.items = items;
  const at = items.findIndex((it) => it.path === keep);
  S.cursor = S.anchor = at >= 0 ? at : 0;
  S.selected = new Set(items.length ? [S.cursor] : []);
  drawGrid();
  drawClasses();
  drawProgress(data.progress);
  $("count").textContent = `${items.length} shown`;
  $("sorted-by").hidden = !S.sort;
  if (S.sort) $("sorted-by").firstElementChild.textContent = S.sort.label;
}

function cardBody(card, it) {
  const state = it.state === "reviewed" ? "✓ " + it.review : it.state === "rejected" ? "rejected"
    : it.state === "uncertain" ? "uncertain" : "";
  card.className = "card " + it.state;
  card.dataset.state = it.state;
  card.dataset.review = it.review || "";
  card.replaceChildren(
    el("img", {src: `/api/thumb/${it.index}`, loading: "lazy", alt: it.path, width: "150", height: "150"}),
    el("span", {class: "state", text: state}),
    el("button", {class: "like", type: "button", title: "more like this", text: "≈"}),
    el("div", {class: "path", title: it.path, text: it.path}),
    ...it.top_k.map((t) => el("div", {class: "top"}, el("span", {text: t.class}), el("span", {text: t.score.toFixed(2)}))),
  );
  if (S.sort) card.append(el("div", {class: "sim", text: `similarity ${S.sort.scores.get(it.index).toFixed(3)}`}));
}

const CHUNK = 240;  // cards drawn at a time: a set of any size opens as fast as a small one

function drawGrid() {
  $("grid").replaceChildren();
  drawMore(CHUNK);
  drawSelection();
}

function drawMore(upto) {
  const grid = $("grid");
  const end = Math.min(S.items.length, Math.max(upto, grid.children.length));
  const cards = [];
  for (let pos = grid.children.length; pos < end; pos++) {
    const it = S.items[pos];
    const card = el("div", {role: "gridcell", "data-pos": String(pos), "data-path": it.path, "data-index": String(it.index)});
    cardBody(card, it);
    cards.push(card);
  }
  grid.append(...cards);
}

function drawSelection() {
  const cards = $("grid").children;
  drawMore(Math.max(S.cursor, ...S.selected) + 1);
  for (const c of document.querySelectorAll(".card.selected, .card.cursor")) c.classList.remove("selected", "cursor");
  for (const pos of S.selected) if (cards[pos]) cards[pos].classList.add("selected");
  const cur = cards[S.cursor];
  if (cur) {
    cur.classList.add("cursor");
    cur.scrollIntoView({block: "nearest"});
  }
  if (!$("viewer").hidden) openViewer();
}

function shownClasses() {
  const t = S.typed.toLowerCase();
  return S.classes.filter((c) => c.toLowerCase().includes(t));
}

function drawClasses() {
  const shown = shownClasses();
  $("class-filter").textContent = S.typed ? `“${S.typed}”` : "";
  $("classes").replaceChildren(...S.classes.map((c) => {
    const n = shown.indexOf(c);
    return el("li", {class: n < 0 ? "dim" : n === 0 && S.typed ? "first" : ""},
      el("kbd", {text: n >= 0 && n < 9 ? String(n + 1) : " "}), " " + c);
  }));
}

function drawProgress(p) {
  $("progress").textContent = `${p.reviewed} reviewed · ${p.remaining} to go · ${p.total} images`;
  $("changes").tBodies[0].replaceChildren(...Object.entries(p.per_class).map(([c, n]) =>
    el("tr", {}, el("td", {text: c}), el("td", {text: n.kept}), el("td", {text: n.changed}), el("td", {text: n.rejected}))));
}

// ---- deciding -------------------------------------------------------------------------
function selectedItems() {
  return [...S.selected].sort((a, b) => a - b).map((pos) => S.items[pos]).filter(Boolean);
}

function apply(data) {
  const cards = $("grid").children;
  for (const it of data.items) {
    const pos = S.items.findIndex((x) => x.path === it.path);
    if (pos >= 0) { S.items[pos] = it; if (cards[pos]) cardBody(cards[pos], it); }
  }
  drawSelection();
  drawProgress(data.progress);
}

async function post(rows, undo) {
  try {
    const data = await api("POST", "/api/decisions", rows);
    apply(data);
    note(`saved ${data.saved.length === 1 ? data.saved[0].path : data.saved.length + " images"}` + (undo ? " (undo)" : ""));
    return data.saved;
  } catch (err) {
    note(`NOT saved: ${err.message}`, true);
    return null;
  }
}

// Saves run one after another, so the file keeps the order of the keys pressed.
function queue(job) {
  S.chain = S.chain.then(job);
  return S.chain;
}

function decide(classOf) {
  const chosen = selectedItems();
  if (!chosen.length) return;
  const rows = chosen.map((it) => ({path: it.path, class: classOf(it)}));
  S.undo.push(queue(() => post(rows, false)));
  S.typed = "";
  drawClasses();
  const next = Math.min(Math.max(...S.selected) + 1, S.items.length - 1);
  S.cursor = S.anchor = next;
  S.selected = new Set([next]);
  drawSelection();
}

function undo() {
  const last = S.undo.pop();
  if (!last) { note("nothing to undo"); return; }
  queue(async () => {
    const rows = await last;  // saved rows, each with the value it replaced
    if (!rows) return;
    const pos = S.items.findIndex((x) => x.path === rows[0].path);
    if (pos >= 0) { S.cursor = S.anchor = pos; S.selected = new Set([pos]); }
    await post(rows.map((r) => ({path: r.path, class: r.previous, undo: true})), true);
  });
}

// ---- moving and the keyboard ----------------------------------------------------------
function columns() {
  return getComputedStyle($("grid")).gridTemplateColumns.split(" ").length || 1;
}

function move(delta, extend) {
  if (!S.items.length) return;
  const to = Math.max(0, Math.min(S.items.length - 1, S.cursor + delta));
  S.cursor = to;
  if (!extend) S.anchor = to;
  const [a, b] = [Math.min(S.anchor, to), Math.max(S.anchor, to)];
  S.selected = new Set(Array.from({length: b - a + 1}, (_, k) => a + k));
  drawSelection();
}

function openViewer() {
  const it = S.items[S.cursor];
  if (!it) return;
  $("viewer-img").src = `/api/image/${it.index}`;
  $("viewer-text").textContent = `${it.path} · ${it.top_k.map((t) => `${t.class} ${t.score.toFixed(2)}`).join(" · ")}`
    + (it.review ? ` · reviewed: ${it.review}` : "");
  $("viewer").hidden = false;
}

function onKey(e) {
  if (e.target.closest("input, select, textarea")) {
    if (e.key === "Escape") e.target.blur();
    return;
  }
  const many = S.classes.length > 9;
  const k = e.key;
  let handled = true;
  if (k === "ArrowRight") move(1, e.shiftKey);
  else if (k === "ArrowLeft") move(-1, e.shiftKey);
  else if (k === "ArrowDown") move(columns(), e.shiftKey);
  else if (k === "ArrowUp") move(-columns(), e.shiftKey);
  else if ((e.ctrlKey || e.metaKey) && k.toLowerCase() === "z") undo();
  else if (e.ctrlKey || e.metaKey || e.altKey) handled = false;
  else if (/^[1-9]$/.test(k)) {
    const c = shownClasses()[Number(k) - 1];
    if (c) decide(() => c);
  } else if (k === "0" || k === "Delete") decide(() => REJECTED);
  else if (k === "Enter") {
    const first = S.typed && shownClasses()[0];
    decide(first ? () => first : (it) => it.top_k[0].class);
  } else if (k === "Escape") {
    S.typed = "";
    drawClasses();
    $("viewer").hidden = true;
  } else if (k === "Backspace" && S.typed) { S.typed = S.typed.slice(0, -1); drawClasses(); }
  else if (k === "u" && !S.typed) undo();
  else if (k === " " && !(many && S.typed)) $("viewer").hidden ? openViewer() : ($("viewer").hidden = true);
  else if (many && k.length === 1) { S.typed += k.toLowerCase(); drawClasses(); }
  else handled = false;
  if (handled) e.preventDefault();
}

function onClick(e) {
  const card = e.target.closest(".card");
  if (!card) return;
  const pos = Number(card.dataset.pos);
  if (e.target.classList.contains("like")) { similar(S.items[pos].path); return; }
  S.cursor = pos;
  if (!e.shiftKey) S.anchor = pos;
  move(0, e.shiftKey);
  if (!e.shiftKey && e.target.tagName === "IMG") openViewer();
}

// ---- search, look-alikes, re-labeling -------------------------------------------------
async function ranked(label, url, body) {
  note("ranking…");
  try {
    const data = await api("POST", url, body);
    S.sort = {label, scores: new Map(data.results.map((r) => [r.index, r.score]))};
    S.items = [];  // the ranking from its top
    await load();
    note(`${label}` + (data.missing ? ` (${data.missing} images have no cached embedding)` : ""));
  } catch (err) {
    note(err.message, true);
  }
}

function similar(path) { return ranked(`like ${path}`, "/api/similar", {path}); }

async function relabel() {
  const button = $("relabel");
  button.disabled = true;
  $("relabel-result").textContent = "re-scoring…";
  try {
    await S.chain;
    const r = await api("POST", "/api/relabel", {});
    $("relabel-result").textContent = `cross-validated accuracy ${(100 * r.cv_accuracy).toFixed(1)}% on ${r.reviewed} ` +
      `reviewed; ${r.changed} of ${r.rescored} suggestions changed (${r.seconds.toFixed(2)} s)`;
    S.sort = null;
    S.items = [];  // the new queue from its top
    await load();
  } catch (err) {
    $("relabel-result").textContent = err.message;
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("keydown", onKey);
window.addEventListener("scroll", () => {  // near the end of what is drawn: draw more
  if (innerHeight + scrollY > document.body.offsetHeight - 2 * innerHeight) drawMore($("grid").children.length + CHUNK);
}, {passive: true});
$("grid").addEventListener("click", onClick);
$("viewer").addEventListener("click", () => { $("viewer").hidden = true; });
$("search-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("search").value.trim();
  if (text) ranked(`search “${text}”`, "/api/search", {text});
  $("search").blur();
});
$("clear-sort").addEventListener("click", () => { S.sort = null; load(); });
$("relabel").addEventListener("click", relabel);
for (const id of ["f-state", "f-class", "f-min", "f-max"]) $(id).addEventListener("change", () => load());
// another tab (or server) may have saved decisions: look again when this tab comes back
document.addEventListener("visibilitychange", () => { if (!document.hidden) S.chain.then(load); });
load().then(() => { document.body.dataset.ready = "1"; }, (err) => note(err.message, true));
