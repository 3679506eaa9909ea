// inspectproxy live console. Plain JS, no network loads but this server's
// own API. The list is virtualised (only visible rows are in the DOM) and
// redrawn at most once per animation frame, so 10,000 rows and a stream of
// batches stay smooth.
"use strict";

const TOKEN = document.querySelector('meta[name="inspectproxy-token"]').content;
const HISTORY = parseInt(document.querySelector('meta[name="inspectproxy-history"]').content, 10) || 10000;
const ROW = 26;
const $ = (id) => document.getElementById(id);

// ---- model --------------------------------------------------------------
const rows = new Map(); // id -> row (see console/rows.go for the fields)
let order = []; // ids by start time, oldest first
let view = []; // ids shown under the filter
let selected = null;
let dirty = true; // view must be recomputed
let stats = { dropped: 0 };

function cmpRow(a, b) {
  return a.t - b.t || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

// insertOrdered places id by start time; new rows nearly always go last.
function insertOrdered(r) {
  let i = order.length;
  while (i > 0 && cmpRow(rows.get(order[i - 1]), r) > 0) i--;
  order.splice(i, 0, r.id);
}

let closedCount = 0; // rows not open, kept up to date for trim and the footer

function applyRows(msg) {
  if (msg.reset) {
    rows.clear();
    closedCount = 0;
    for (const r of msg.rows) {
      rows.set(r.id, r);
      if (!r.open) closedCount++;
    }
    order = Array.from(rows.values()).sort(cmpRow).map((r) => r.id);
  } else {
    const now = Date.now();
    for (const r of msg.rows) {
      const old = rows.get(r.id);
      r.seen = old ? old.seen : now; // when this console first showed it
      rows.set(r.id, r);
      if (!old) insertOrdered(r);
      if (!r.open && (!old || old.open)) closedCount++;
    }
  }
  trim();
  dirty = true;
  schedule();
  if (selected && msg.rows.some((r) => r.id === selected)) refreshDetail();
}

// trim keeps about HISTORY closed rows, dropping the oldest, like the hub.
// It waits for a 5% excess so that its pass over the list is rare.
function trim() {
  if (closedCount <= HISTORY + Math.max(50, HISTORY / 20)) return;
  let excess = closedCount - HISTORY;
  closedCount -= excess;
  const keep = [];
  for (const id of order) {
    const r = rows.get(id);
    if (excess > 0 && !r.open) {
      rows.delete(id);
      excess--;
    } else keep.push(id);
  }
  order = keep;
}

// ---- filters ----------------------------------------------------------------
const filt = { q: "", kind: "", ats: false, fail: false, open: false };

function matches(r) {
  if (filt.kind && r.k !== filt.kind) return false;
  if (filt.ats && r.ats !== "no") return false;
  if (filt.fail && !failed(r)) return false;
  if (filt.open && !r.open) return false;
  if (filt.q) {
    const hay = (r.tg + " " + (r.sni || "") + " " + r.cl + " " + r.id + " " + (r.err || "") + " " + r.k).toLowerCase();
    for (const w of filt.q.split(/\s+/)) if (w && !hay.includes(w)) return false;
  }
  return true;
}

function failed(r) {
  return !!(r.err || r.rst || r.to);
}

function readFilters() {
  filt.q = $("q").value.trim().toLowerCase();
  filt.kind = $("kind").value;
  filt.ats = $("f-ats").checked;
  filt.fail = $("f-fail").checked;
  filt.open = $("f-open").checked;
  dirty = true;
  schedule();
}

// ---- rendering the list -------------------------------------------------------
const viewport = $("viewport");
const rowsEl = $("rows");
const spacer = $("spacer");
const pool = [];
let frame = 0;

function schedule() {
  if (!frame) frame = requestAnimationFrame(render);
}

const COLS = ["t", "cl", "tg", "k", "tls", "alpn", "ats", "dns", "con", "hs", "ttfb", "dur", "close", "err"];
const NUM = new Set(["dns", "con", "hs", "ttfb", "dur"]);

function makeRow() {
  const el = document.createElement("div");
  el.className = "row";
  el.setAttribute("role", "row");
  el.cells = {};
  for (const c of COLS) {
    const s = document.createElement("span");
    s.className = c === "t" ? "t" : NUM.has(c) ? "n" : "c-" + c;
    el.appendChild(s);
    el.cells[c] = s;
  }
  el.addEventListener("click", () => select(el.dataset.id, true));
  return el;
}

function fmtMS(v) {
  if (v === undefined || v === null) return "";
  if (v >= 10000) return (v / 1000).toFixed(1) + " s";
  if (v >= 100) return v.toFixed(0);
  if (v >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

function fmtTime(t) {
  const d = new Date(t);
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds()) + "." + p(d.getMilliseconds(), 3);
}

const PHASES = {
  accepted: "accepted", dns: "DNS", connected: "connected", client_hello: "ClientHello",
  server_hello: "ServerHello", handshake_done: "handshake done", http: "HTTP", first_fin: "half-closed", closed: "closed",
};

function closeText(r) {
  if (r.open) return [(PHASES[r.ph] || r.ph) + "…", "close-open"];
  const parts = [];
  if (r.fin) parts.push(r.fin + (r.rst ? " FIN" : " FIN first"));
  if (r.rst) parts.push("RST by " + r.rst);
  if (r.to) parts.push(r.to + " timeout");
  return [parts.join(" · "), r.rst || r.to ? "close-rst" : ""];
}

function fill(el, r) {
  const c = el.cells;
  el.dataset.id = r.id;
  el.className = "row" + (r.open ? " open" : "") + (r.id === selected ? " sel" : "");
  el.setAttribute("aria-selected", r.id === selected ? "true" : "false");
  c.t.textContent = fmtTime(r.t);
  c.cl.textContent = r.cl;
  c.tg.textContent = r.tg;
  c.tg.title = r.sni && r.sni !== r.tg.replace(/:\d+$/, "") ? r.tg + " (SNI " + r.sni + ")" : r.tg;
  c.k.innerHTML = "";
  const k = document.createElement("span");
  k.className = "kind kind-" + r.k;
  k.textContent = r.k;
  c.k.appendChild(k);
  c.tls.textContent = r.tls || "";
  c.alpn.textContent = r.alpn ? (r.off ? r.alpn + "?" : r.alpn) : "";
  c.alpn.className = "c-alpn" + (r.off ? " offered" : "");
  c.alpn.title = r.off ? "offered by the client (TLS 1.3 hides the server's choice)" : "";
  c.ats.className = "c-ats" + (r.ats ? " ats-" + r.ats : "");
  c.ats.textContent = r.ats === "yes" ? "✓ pass" : r.ats === "no" ? "✗ " + (r.rules ? r.rules.length : "") : r.ats === "unknown" ? "? unknown" : "";
  c.ats.title = r.rules ? r.rules.join("\n") : "";
  c.dns.textContent = fmtMS(r.dns);
  c.con.textContent = fmtMS(r.con);
  c.hs.textContent = fmtMS(r.hs);
  c.ttfb.textContent = fmtMS(r.ttfb);
  c.dur.textContent = r.open ? fmtMS(Date.now() - r.t) : fmtMS(r.dur);
  const [ct, cc] = closeText(r);
  c.close.textContent = ct;
  c.close.className = "c-close " + cc;
  c.err.textContent = r.err || "";
  c.err.title = r.err || "";
  c.err.className = "c-err err";
}

function render() {
  frame = 0;
  if (dirty) {
    view = order.filter((id) => matches(rows.get(id)));
    dirty = false;
    spacer.style.height = view.length * ROW + "px";
    updateCounts();
    if ($("follow").checked) viewport.scrollTop = viewport.scrollHeight;
  }
  $("empty").hidden = rows.size > 0;
  const first = Math.max(0, Math.floor(viewport.scrollTop / ROW) - 4);
  const count = Math.ceil(viewport.clientHeight / ROW) + 8;
  const last = Math.min(view.length, first + count);
  while (pool.length < last - first) {
    const el = makeRow();
    pool.push(el);
    rowsEl.appendChild(el);
  }
  for (let i = 0; i < pool.length; i++) {
    const el = pool[i];
    const idx = first + i;
    if (idx >= last) {
      el.hidden = true;
      continue;
    }
    el.hidden = false;
    el.style.top = idx * ROW + "px";
    fill(el, rows.get(view[idx]));
  }
}

function updateCounts() {
  const open = rows.size - closedCount;
  let s = view.length === rows.size ? rows.size + " connections" : view.length + " of " + rows.size + " connections";
  s += " · " + open + " open";
  if (stats.dropped) s += " · console fell behind " + stats.dropped + "× (resynced)";
  $("counts").textContent = s;
}

viewport.addEventListener("scroll", () => {
  const atBottom = viewport.scrollTop + viewport.clientHeight >= viewport.scrollHeight - ROW;
  if ($("follow").checked !== atBottom) $("follow").checked = atBottom;
  schedule();
});
window.addEventListener("resize", schedule);
setInterval(() => {
  // open rows' durations tick
  if (view.length) schedule();
}, 1000);

// ---- selection and keyboard -------------------------------------------------
function select(id, open) {
  selected = id;
  schedule();
  if (open || !$("detail").hidden) showDetail(id);
}

function move(delta) {
  if (!view.length) return;
  let i = selected ? view.indexOf(selected) : -1;
  i = i < 0 ? (delta > 0 ? 0 : view.length - 1) : Math.max(0, Math.min(view.length - 1, i + delta));
  select(view[i], false);
  const top = i * ROW;
  if (top < viewport.scrollTop) viewport.scrollTop = top;
  else if (top + ROW > viewport.scrollTop + viewport.clientHeight) viewport.scrollTop = top + ROW - viewport.clientHeight;
}

document.addEventListener("keydown", (e) => {
  const inField = e.target.matches("input[type=search], select");
  if (e.key === "Escape") {
    if (!$("help").hidden) $("help").hidden = true;
    else if (!$("export-menu").hidden) toggleMenu(false);
    else if (!$("detail").hidden) closeDetail();
    else if ($("q").value) {
      $("q").value = "";
      readFilters();
    }
    if (inField) e.target.blur();
    return;
  }
  if (inField || e.ctrlKey || e.metaKey || e.altKey) return;
  switch (e.key) {
    case "/": e.preventDefault(); $("q").focus(); break;
    case "ArrowDown": case "j": e.preventDefault(); move(1); break;
    case "ArrowUp": case "k": e.preventDefault(); move(-1); break;
    case "Enter": if (selected) showDetail(selected); break;
    case "Home": e.preventDefault(); viewport.scrollTop = 0; if (view.length) select(view[0], false); break;
    case "End": e.preventDefault(); $("follow").checked = true; dirty = true; schedule(); break;
    case "a": $("f-ats").click(); break;
    case "f": $("f-fail").click(); break;
    case "o": $("f-open").click(); break;
    case "?": $("help").hidden = !$("help").hidden; break;
  }
});

for (const id of ["q", "kind", "f-ats", "f-fail", "f-open"]) $(id).addEventListener("input", readFilters);
$("filters").addEventListener("submit", (e) => e.preventDefault());
$("help-btn").addEventListener("click", () => ($("help").hidden = !$("help").hidden));

// ---- export -----------------------------------------------------------------
function toggleMenu(show) {
  $("export-menu").hidden = !show;
  $("export-btn").setAttribute("aria-expanded", String(show));
  if (show) $("export-menu").querySelector("button").focus();
}
$("export-btn").addEventListener("click", () => toggleMenu($("export-menu").hidden));
$("export-menu").addEventListener("click", async (e) => {
  const b = e.target.closest("button[data-format]");
  if (!b) return;
  toggleMenu(false);
  const res = await fetch("/api/export?format=" + b.dataset.format, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Inspectproxy-Token": TOKEN },
    body: JSON.stringify({ ids: view }),
  });
  if (!res.ok) {
    setStatus("export failed: " + (await res.text()).trim(), "down");
    return;
  }
  const name = (res.headers.get("Content-Disposition") || "").match(/filename="([^"]+)"/);
  const url = URL.createObjectURL(await res.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = name ? name[1] : "inspectproxy-export";
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
});
document.addEventListener("click", (e) => {
  if (!e.target.closest(".menu")) toggleMenu(false);
});

// ---- stream -----------------------------------------------------------------
function setStatus(text, cls) {
  const s = $("status");
  s.textContent = text;
  s.className = "status " + (cls || "");
}

function connect() {
  const es = new EventSource("/api/stream?k=" + encodeURIComponent(TOKEN));
  es.addEventListener("rows", (e) => {
    applyRows(JSON.parse(e.data));
    setStatus("live", "live");
  });
  es.addEventListener("stats", (e) => {
    stats = JSON.parse(e.data);
    updateCounts();
  });
  es.onerror = () => setStatus(es.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting…", "down");
}
connect();

// ---- detail -----------------------------------------------------------------
let detailSeq = 0;

function closeDetail() {
  $("detail").hidden = true;
  viewport.focus();
}
$("d-close").addEventListener("click", closeDetail);

function refreshDetail() {
  if (!$("detail").hidden && selected) showDetail(selected);
}

async function showDetail(id) {
  const seq = ++detailSeq;
  $("detail").hidden = false;
  const res = await fetch("/api/conn/" + encodeURIComponent(id), { headers: { "X-Inspectproxy-Token": TOKEN } });
  if (seq !== detailSeq) return;
  if (!res.ok) {
    $("d-target").textContent = id;
    $("d-sub").textContent = (await res.text()).trim();
    $("d-body").replaceChildren();
    return;
  }
  const d = await res.json();
  if (seq !== detailSeq) return;
  const scroll = $("d-body").scrollTop;
  renderDetail(d);
  $("d-body").scrollTop = scroll;
}

// el builds an element: el("div", {class: "x"}, child, "text", ...)
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k !== null && k !== undefined && k !== false) e.append(k);
  return e;
}

function kv(pairs) {
  const t = el("table", { class: "kv" });
  for (const [k, v] of pairs) {
    if (v === undefined || v === null || v === "" || (Array.isArray(v) && !v.length)) continue;
    let cell = v;
    if (Array.isArray(v)) cell = el("div", { class: "tags" }, ...v.map((x) => el("span", { class: "tag", text: x })));
    else if (typeof v !== "object") cell = String(v);
    t.append(el("tr", {}, el("th", { text: k }), el("td", {}, cell)));
  }
  return t;
}

function chip(label, v, cls) {
  if (v === undefined || v === null) return null;
  return el("span", { class: "chip " + (cls || "") }, label + " ", el("b", { text: typeof v === "number" ? fmtMS(v) + " ms" : v }));
}

function renderDetail(d) {
  const ev = d.event;
  const open = !ev.end || ev.end.startsWith("0001-");
  $("d-target").textContent = ev.target || ev.client;
  $("d-sub").textContent = [ev.kind, "from " + ev.client, ev.id, new Date(ev.start).toLocaleString(), open ? "open · " + (PHASES[d.phase] || d.phase) : "closed"].join(" · ");
  const body = $("d-body");
  body.replaceChildren();
  const tcp = ev.tcp || {};
  const tls = ev.tls || {};
  const r = rows.get(ev.id) || {};
  body.append(el("div", { class: "chips" },
    chip("DNS", tcp.dns_ms, "c-dns"), chip("connect", tcp.connect_ms, "c-tcp"), chip("TLS", tls.handshake_ms, "c-tls"),
    chip("TTFB", r.ttfb, "c-http"), open ? null : chip("duration", tcp.duration_ms ?? null),
    chip("up", tcp.bytes_up !== undefined ? tcp.bytes_up + " B" : null), chip("down", tcp.bytes_down !== undefined ? tcp.bytes_down + " B" : null),
    ev.error ? el("span", { class: "chip c-bad", text: ev.error }) : null));

  body.append(el("h3", { text: "How the connection went" }));
  body.append(diagram(d.story, ev, open));
  body.append(el("div", { class: "legend" },
    ...[["TCP", "tcp"], ["DNS", "dns"], ["TLS", "tls"], ["HTTP", "http"], ["data", "data"]].map(([n, c]) =>
      el("span", {}, el("i", { class: "lg-" + c }), n)),
    el("span", {}, el("i", { class: "dash lg-enc" }), "encrypted (TLS 1.3)"),
    el("span", { text: "Spacing follows time; ≈ marks a gap drawn shorter. Times are when the proxy saw each message." })));

  if (ev.http && ev.http.length) {
    body.append(el("h3", { text: "HTTP exchanges" }));
    const t = el("table", { class: "grid" }, el("tr", {}, ...["method", "url", "status", "proto", "wait", "receive", "bytes"].map((h, i) => el("th", { class: i >= 4 ? "n" : null, text: h }))));
    for (const h of ev.http) {
      t.append(el("tr", {}, el("td", { text: h.method }), el("td", { text: h.url }), el("td", { text: h.status || h.error || "" }), el("td", { text: h.proto || "" }),
        el("td", { class: "n", text: fmtMS(h.wait_ms) }), el("td", { class: "n", text: fmtMS(h.receive_ms) }), el("td", { class: "n", text: h.bytes })));
    }
    body.append(t);
  }

  if (ev.tls) {
    const ch = tls.client_hello;
    if (ch) {
      body.append(el("h3", { text: "ClientHello" }));
      body.append(kv([["SNI", ch.sni], ["legacy version", ch.legacy_version], ["supported versions", ch.supported_versions], ["ALPN", ch.alpn],
        ["cipher suites", ch.cipher_suites], ["extensions (wire order)", ch.extensions], ["supported groups", ch.supported_groups],
        ["key shares", ch.key_shares], ["signature algorithms", ch.signature_algorithms], ["EC point formats", ch.ec_point_formats], ["size", ch.size ? ch.size + " bytes" : ""]]));
    }
    const sh = tls.server_hello;
    body.append(el("h3", { text: "ServerHello and the result" }));
    body.append(kv([["version", tls.version], ["cipher", tls.cipher], ["key exchange", tls.key_exchange_group], ["ALPN", tls.alpn],
      ["resumed", tls.resumed ? "yes" : ""], ["legacy version", sh && sh.legacy_version], ["extensions", sh && sh.extensions],
      ["HelloRetryRequest", tls.hello_retry_request ? "group " + tls.hello_retry_request.group + (tls.hello_retry_request.changed ? ", changed " + tls.hello_retry_request.changed.join(", ") : "") : ""],
      ["alert", tls.alert], ["handshake failure", tls.handshake_failure ? tls.handshake_failure.how + " by " + tls.handshake_failure.by + " after " + tls.handshake_failure.phase + (tls.handshake_failure.alert ? " (" + tls.handshake_failure.alert + ")" : "") : ""],
      ["client rejected", tls.client_rejected ? (tls.client_rejected.likely + (tls.client_rejected.alert ? ": " + tls.client_rejected.alert : "")) : ""],
      ["parse error", tls.parse_error]]));
    body.append(el("h3", { text: "Fingerprints" }));
    body.append(kv([["JA3", tls.ja3_hash ? el("span", {}, el("code", { text: tls.ja3_hash }), el("div", { class: "muted", text: tls.ja3 })) : ""],
      ["JA4", tls.ja4 ? el("code", { text: tls.ja4 }) : ""], ["JA3S", tls.ja3s_hash ? el("span", {}, el("code", { text: tls.ja3s_hash }), el("div", { class: "muted", text: tls.ja3s })) : ""]]));
    body.append(el("h3", { text: "Certificate chain" }));
    body.append(chainView(tls));
  } else if (ev.tls_absent) {
    body.append(el("h3", { text: "TLS" }), el("p", { class: "muted", text: "No TLS: " + ev.tls_absent }));
  }

  body.append(el("h3", { text: "App Transport Security" }));
  body.append(atsView(ev, d.ats_advice));

  body.append(el("h3", { text: "Raw event" }));
  body.append(el("details", {}, el("summary", { text: "JSON, as in the events file" }), el("pre", { class: "raw", text: JSON.stringify(ev, null, 2) })));
}

function chainView(tls) {
  const box = el("div");
  let v = "not verified (no chain)";
  let cls = "unknown";
  if (tls.verified === true) [v, cls] = ["verified", "ok"];
  else if (tls.verified === false) [v, cls] = ["does not verify: " + (tls.verify_error_kind || "") + (tls.verify_error ? " — " + tls.verify_error : ""), "bad"];
  box.append(el("p", {}, el("span", { class: "verdict " + cls, text: v }), tls.chain_source ? el("span", { class: "muted", text: "  chain " + tls.chain_source }) : null,
    tls.chain_error ? el("span", { class: "muted", text: "  " + tls.chain_error }) : null));
  (tls.chain || []).forEach((c, i) => {
    box.append(el("div", { class: "cert" },
      el("div", { class: "who", text: (i === 0 ? "leaf  " : c.is_ca ? "CA  " : "") + c.subject }),
      kv([["issuer", c.issuer], ["names", [...(c.dns_names || []), ...(c.ip_addresses || [])]], ["key", c.key_type + (c.key_bits ? " " + c.key_bits + " bit" : "") + (c.curve ? " " + c.curve : "")],
        ["signature", c.signature_algorithm], ["valid", (c.not_before || "").slice(0, 10) + " to " + (c.not_after || "").slice(0, 10)],
        ["SHA-256", c.sha256 ? el("code", { text: c.sha256 }) : ""], ["SCTs", c.scts]])));
  });
  return box;
}

function atsView(ev, advice) {
  const a = ev.ats;
  if (!a) return el("p", { class: "muted", text: ev.ats_absent || "no verdict" });
  const cls = a.compliant === "yes" ? "ok" : a.compliant === "no" ? "bad" : "unknown";
  const box = el("div", {}, el("p", {}, el("span", { class: "verdict " + cls, text: a.compliant === "yes" ? "ATS allows it" : a.compliant === "no" ? "ATS blocks it" : "ATS verdict unknown" }),
    el("span", { class: "muted", text: "  policy " + a.policy })));
  const list = (title, vs) => vs && vs.length ? [el("div", { class: "muted", text: title }), el("ul", {}, ...vs.map((v) => el("li", {}, el("code", { text: v.rule }), " " + v.detail)))] : [];
  box.append(...list("violations", a.violations), ...list("not seen", a.unknown));
  if (a.app) box.append(el("p", {}, "Under the app's Info.plist: ", el("b", { text: a.app.allowed ? "allowed" : "blocked" }), a.app.key ? " by " + a.app.key : "", a.app.reason ? " — " + a.app.reason : ""));
  for (const ad of advice || []) {
    if (ad.plist_xml) box.append(el("div", { class: "muted", text: "Info.plist: the NSExceptionDomains entry that would allow " + ad.domain }), el("pre", { class: "plist", text: ad.plist_xml }));
    for (const u of ad.unfixable || []) box.append(el("p", { class: "err", text: "No Info.plist key fixes: " + u }));
    if (ad.note) box.append(el("p", { class: "muted", text: ad.note }));
  }
  return box;
}

// ---- the sequence diagram -------------------------------------------------------
const SVGNS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...kids) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) e.setAttribute(k, v);
  for (const k of kids) if (k !== null && k !== undefined) e.append(k);
  return e;
}

const LAYER_COLOR = { tcp: "var(--tcp)", dns: "var(--dns)", tls: "var(--tls)", http: "var(--http)", data: "var(--data)", note: "var(--note)" };

// layout gives every step a y: consecutive steps are at least MIN apart
// (room for a label), further apart in proportion to the time between
// them, and at most MAX (longer gaps are drawn shorter and marked ≈).
function layout(steps) {
  const MIN = 34, MAX = 110;
  const times = steps.map((st) => st.at);
  const span = Math.max(1e-3, times[times.length - 1] - times[0]);
  // px per ms: the whole story in about 520 px before the minimum spacing
  const scale = 520 / span;
  const ys = [];
  const breaks = [];
  let y = 70;
  steps.forEach((st, i) => {
    if (i > 0) {
      const gap = st.at - steps[i - 1].at;
      const want = gap * scale;
      let dy = Math.max(MIN, Math.min(MAX, MIN * 0.6 + want));
      if (MIN * 0.6 + want > MAX) breaks.push({ y: y + dy / 2, gap });
      if (gap === 0) dy = MIN;
      y += dy;
    }
    ys.push(y);
  });
  return { ys, breaks, height: y + 46 };
}

// yAt maps a time to a y by the steps' own positions.
function yAt(steps, ys, t) {
  for (let i = 0; i < steps.length; i++) {
    if (steps[i].at === t) return ys[i];
    if (steps[i].at > t) {
      if (i === 0) return ys[0];
      const a = steps[i - 1].at, b = steps[i].at;
      return ys[i - 1] + ((t - a) / (b - a)) * (ys[i] - ys[i - 1]);
    }
  }
  return ys[ys.length - 1];
}

function diagram(story, ev, open) {
  const W = 760;
  const X = { client: 150, proxy: 380, server: 610 };
  const arrows = story.filter((st) => !st.end);
  const spans = story.filter((st) => st.end !== undefined && st.end !== null);
  const { ys, breaks, height } = layout(arrows);
  const H = height + (open ? 30 : 0);
  const svg = s("svg", { class: "seq", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", "aria-label": "Sequence diagram of the connection" });
  const defs = s("defs");
  for (const [name, col] of Object.entries(LAYER_COLOR).concat([["bad", "var(--bad)"]])) {
    defs.append(s("marker", { id: "ah-" + name, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      s("path", { d: "M0,0 L10,5 L0,10 z", fill: col })));
  }
  svg.append(defs);

  // lanes
  const server = ev.tcp && ev.tcp.remote_addr ? ev.tcp.remote_addr : ev.target;
  const heads = [["client", "Client", ev.client], ["proxy", "inspectproxy", ev.kind === "tunnel" ? "passthrough" : ev.kind], ["server", "Server", server]];
  for (const [k, title, sub] of heads) {
    svg.append(s("text", { x: X[k], y: 20, "text-anchor": "middle", class: "lane-title" }, title));
    svg.append(s("text", { x: X[k], y: 36, "text-anchor": "middle", class: "lane-sub" }, sub || ""));
    svg.append(s("line", { x1: X[k], y1: 46, x2: X[k], y2: H - 10, class: "lane " + k }));
  }

  // spans under the arrows: half-close bands across, lookups on a lane
  for (const st of spans) {
    const y1 = yAt(arrows, ys, st.at);
    const y2 = Math.max(y1 + 6, yAt(arrows, ys, st.end));
    const col = LAYER_COLOR[st.layer] || LAYER_COLOR.note;
    const g = s("g", { class: "step span-step", "data-label": st.label, "data-layer": st.layer, tabindex: 0 });
    g.append(s("title", {}, st.label + (st.detail ? " — " + st.detail : "") + " (" + fmtMS(st.at) + "–" + fmtMS(st.end) + " ms)"));
    if (st.label.startsWith("half-close")) {
      g.append(s("rect", { x: X.client, y: y1, width: X.server - X.client, height: y2 - y1, fill: col, class: "band" }));
      g.append(s("text", { x: X.server + 8, y: (y1 + y2) / 2 + 4, class: "detail" }, st.label));
    } else {
      const x = X[st.from];
      g.append(s("rect", { x: x - 5, y: y1, width: 10, height: y2 - y1, rx: 3, fill: col, class: "span" }));
      g.append(s("text", { x: x - 10, y: (y1 + y2) / 2 + 4, "text-anchor": "end", class: "detail" }, st.label + " " + fmtMS(st.end - st.at) + " ms"));
    }
    svg.append(g);
  }

  // time ticks and gap marks
  let lastTick = -1;
  arrows.forEach((st, i) => {
    if (st.at !== lastTick) svg.append(s("text", { x: 8, y: ys[i] + 4, class: "tick" }, fmtMS(st.at) + " ms"));
    lastTick = st.at;
  });
  for (const b of breaks) {
    svg.append(s("text", { x: 8, y: b.y + 4, class: "brk" }, "≈ +" + fmtMS(b.gap) + " ms"));
    for (const k of ["client", "proxy", "server"]) svg.append(s("rect", { x: X[k] - 6, y: b.y - 3, width: 12, height: 6, fill: "var(--panel)" }));
  }

  // arrows
  arrows.forEach((st, i) => {
    const y = ys[i];
    const bad = st.bad;
    const col = bad ? "var(--bad)" : LAYER_COLOR[st.layer] || LAYER_COLOR.note;
    const g = s("g", { class: "step" + (st.enc ? " enc" : ""), "data-label": st.label, "data-layer": st.layer, "data-at": st.at, tabindex: 0 });
    g.append(s("title", {}, st.label + (st.detail ? " — " + st.detail : "") + " · " + fmtMS(st.at) + " ms"));
    g.append(s("rect", { x: 70, y: y - 16, width: W - 74, height: 26, rx: 4, class: "hit" }));
    if (st.from === st.to) {
      const x = X[st.from];
      g.append(s("circle", { cx: x, cy: y, r: 4.5, fill: col }));
      g.append(s("text", { x: x + 10, y: y - 2, class: "label", fill: col }, st.label));
      if (st.detail) g.append(s("text", { x: x + 10, y: y + 11, class: "detail" }, clip(st.detail, 60)));
    } else {
      const x1 = X[st.from], x2 = X[st.to];
      const dir = x2 > x1 ? 1 : -1;
      g.append(s("line", { x1: x1, y1: y, x2: x2 - dir * 1, y2: y, stroke: col, class: "arrow", "marker-end": "url(#ah-" + (bad ? "bad" : st.layer) + ")" }));
      if ((st.from === "client" && st.to === "server") || (st.from === "server" && st.to === "client")) {
        g.append(s("circle", { cx: X.proxy, cy: y, r: 3, fill: col })); // where the proxy saw it
      }
      const mid = (x1 + x2) / 2;
      g.append(s("text", { x: mid, y: y - 5, "text-anchor": "middle", class: "label", fill: bad ? "var(--bad)" : null }, clip(st.label, 56)));
      if (st.detail) g.append(s("text", { x: mid, y: y + 12, "text-anchor": "middle", class: "detail" }, clip(st.detail, 64)));
    }
    svg.append(g);
  });
  // brackets on the right: the layers, one above the other in time
  const NAMES = { tcp: "TCP", tls: "TLS", http: "HTTP", data: "data" };
  let runStart = 0;
  for (let i = 1; i <= arrows.length; i++) {
    const l = arrows[runStart].layer;
    if (i < arrows.length && (arrows[i].layer === l || arrows[i].layer === "note" || arrows[i].layer === "dns")) continue;
    let last = i - 1;
    while (last > runStart && arrows[last].layer !== l) last--;
    if (NAMES[l] && last > runStart) {
      const y1 = ys[runStart] - 8, y2 = ys[last] + 8, x = W - 22;
      const col = LAYER_COLOR[l];
      svg.append(s("path", { d: `M${x - 5},${y1} h5 V${y2} h-5`, stroke: col, fill: "none", "stroke-width": 1.5, class: "bracket" }));
      svg.append(s("text", { x: x + 10, y: (y1 + y2) / 2, transform: `rotate(90 ${x + 10} ${(y1 + y2) / 2})`, "text-anchor": "middle", class: "phase", fill: col }, NAMES[l]));
    }
    runStart = i;
  }
  if (open) {
    const y = height - 10;
    svg.append(s("line", { x1: X.client - 40, y1: y, x2: X.server + 40, y2: y, stroke: "var(--ok)", "stroke-dasharray": "3 4" }));
    svg.append(s("text", { x: X.proxy, y: y + 16, "text-anchor": "middle", class: "detail" }, "open: " + fmtMS(Date.now() - Date.parse(ev.start)) + " ms so far"));
  }
  return svg;
}

function clip(t, n) {
  return t.length > n ? t.slice(0, n - 1) + "…" : t;
}
