// tunewise dashboard: plain JavaScript, no build step, nothing loaded from the network. Each page calls one of the
// page functions at the bottom; data comes from the /api routes (tunewise/ui/app.py).
"use strict";

let MESSAGES = {};
let LANG = localStorage.getItem("tw-lang") || "";

function t(key, params) {
  let s = MESSAGES[key] || key;
  for (const [k, v] of Object.entries(params || {})) s = s.split("{" + k + "}").join(String(v));
  return s;
}

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function post(path, data) {
  return api(path, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(data || {})});
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const child of children.flat()) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function fmt(value, digits) {
  if (value === null || value === undefined || value === "") return "";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(digits ?? 3);
  return String(value);
}

function query(name) { return new URLSearchParams(location.search).get(name); }

async function boot(page) {
  const m = await api("/api/messages" + (LANG ? "?lang=" + LANG : ""));
  MESSAGES = m.messages; LANG = m.lang;
  document.documentElement.lang = LANG;
  const links = [["/", "ui.runs", "runs"], ["/compare", "ui.compare", "compare"], ["/playground", "ui.playground", "playground"],
                 ["/new", "ui.new_run", "new"]];
  const select = el("select", {id: "lang", onchange: (e) => { localStorage.setItem("tw-lang", e.target.value); location.reload(); }},
                    m.languages.map((l) => el("option", {value: l, selected: l === LANG ? "selected" : null, text: l})));
  document.body.prepend(el("nav", {}, el("span", {class: "brand", text: "tunewise"}),
    links.map(([href, key, id]) => el("a", {href, class: id === page ? "here" : null, text: t(key)})), select));
}

// ---- an SVG line chart ----------------------------------------------------------------------------------------------
const COLORS = ["#0969da", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#57606a"];

class Chart {
  constructor(container, title) {
    this.title = title; this.series = new Map();
    this.root = el("div", {class: "chart", "data-chart": title}, el("h3", {text: title}));
    this.svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    this.svg.setAttribute("viewBox", "0 0 640 260");
    this.legend = el("div", {class: "legend"});
    this.root.append(this.svg, this.legend);
    container.append(this.root);
  }
  add(name, x, y) {
    if (typeof y !== "number" || !isFinite(y)) return;
    if (!this.series.has(name)) this.series.set(name, []);
    this.series.get(name).push([x, y]);
  }
  dropAfter(step) { for (const points of this.series.values()) while (points.length && points[points.length - 1][0] > step) points.pop(); }
  clear() { this.series.clear(); }
  count() { let n = 0; for (const p of this.series.values()) n += p.length; return n; }
  render() {
    const svg = this.svg, W = 640, H = 260, L = 58, R = 12, T = 10, B = 28;
    svg.innerHTML = "";
    svg.dataset.points = String(this.count());
    const all = [...this.series.values()].flat();
    this.legend.innerHTML = "";
    if (!all.length) { svg.append(svgEl("text", {x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#888"}, "—")); return; }
    let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
    let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
    if (x0 === x1) x1 = x0 + 1;
    if (y0 === y1) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
    const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R), sy = (y) => H - B - (y - y0) / (y1 - y0) * (H - T - B);
    for (let i = 0; i <= 4; i++) {
      const yv = y0 + (y1 - y0) * i / 4, xv = x0 + (x1 - x0) * i / 4;
      svg.append(svgEl("line", {x1: L, x2: W - R, y1: sy(yv), y2: sy(yv), stroke: "#eef0f2"}));
      svg.append(svgEl("text", {x: L - 4, y: sy(yv) + 4, "text-anchor": "end", "font-size": 10, fill: "#5b6670"}, tick(yv)));
      svg.append(svgEl("text", {x: sx(xv), y: H - 10, "text-anchor": "middle", "font-size": 10, fill: "#5b6670"}, tick(xv)));
    }
    svg.append(svgEl("line", {x1: L, x2: L, y1: T, y2: H - B, stroke: "#8c959f"}));
    svg.append(svgEl("line", {x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: "#8c959f"}));
    let i = 0;
    for (const [name, points] of this.series) {
      const color = COLORS[i++ % COLORS.length];
      const d = points.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
      svg.append(svgEl("polyline", {points: d, fill: "none", stroke: color, "stroke-width": 1.6, "data-series": name}));
      if (points.length < 40) for (const p of points) svg.append(svgEl("circle", {cx: sx(p[0]), cy: sy(p[1]), r: 2, fill: color}));
      this.legend.append(el("span", {style: `color:${color}`, text: `■ ${name} (${points.length})`}));
    }
  }
}

function svgEl(tag, attrs, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function tick(v) {
  const a = Math.abs(v);
  return a === 0 ? "0" : a >= 1000 ? v.toFixed(0) : a >= 1 ? v.toFixed(2) : v.toPrecision(2);
}

// The curves of one run from metrics.jsonl records. A "start" record of a resumed session drops the points logged
// after its step (the work the interrupted session threw away), as tunewise.monitor.metrics.effective_records does.
function addRecords(charts, records, prefix) {
  for (const r of records) {
    const p = prefix ? prefix + " " : "";
    if (r.kind === "start") for (const c of Object.values(charts)) c.dropAfter(r.step);
    if (r.kind === "train") {
      charts.loss.add(p + "train loss", r.step, Number(r.loss));
      if (charts.lr) charts.lr.add(p + "learning rate", r.step, Number(r.learning_rate));
    }
    if (r.kind === "eval") charts.loss.add(p + "eval loss", r.step, Number(r.eval_loss));
    if (charts.memory && (r.kind === "train" || r.kind === "eval")) {
      const mb = r.cuda_peak_allocated_mb ?? r.peak_rss_mb;
      if (mb !== undefined) charts.memory.add(p + (r.cuda_peak_allocated_mb !== undefined ? "CUDA peak MiB" : "peak RSS MiB"), r.step, Number(mb));
    }
  }
}

// ---- checklist ------------------------------------------------------------------------------------------------------
function checklistTable(run, checklist) {
  const rows = [];
  let phase = null;
  for (const item of checklist.items) {
    if (item.phase !== phase) { phase = item.phase; rows.push(el("tr", {}, el("th", {colspan: 4, text: item.phase_title}))); }
    const mark = {done: "✓", todo: "·", na: "–"}[item.status];
    rows.push(el("tr", {"data-item": item.id, "data-status": item.status},
      el("td", {class: item.status, text: `${mark} ${item.status_text}`}),
      el("td", {text: item.title}),
      el("td", {}, item.note,
         item.flag ? [el("br"), el("span", {class: "flag", text: "! " + item.flag})] : null,
         item.command ? [el("br"), el("code", {class: "command", text: item.command})] : null),
      el("td", {}, item.evidence ? el("a", {class: "evidence", href: `/runs/${encodeURIComponent(run)}/files/${item.evidence}`,
                                            target: "_blank", text: item.evidence}) : "")));
  }
  return el("div", {id: "checklist"}, el("h2", {text: `${checklist.title}: ${checklist.progress_text}`}), el("table", {}, rows));
}

// ---- pages ----------------------------------------------------------------------------------------------------------
async function pageRuns() {
  await boot("runs");
  const main = document.querySelector("main");
  const filters = {status: el("select", {id: "f-status"}), method: el("select", {id: "f-method"}),
                   text: el("input", {id: "f-text", placeholder: t("ui.filter") + ": " + t("ui.name") + " / " + t("ui.model")})};
  const compare = el("button", {id: "compare", text: t("ui.compare"), onclick: () => {
    const picked = [...document.querySelectorAll("input.pick:checked")].map((c) => c.value);
    if (picked.length) location.href = "/compare?runs=" + picked.map(encodeURIComponent).join(",");
  }});
  const body = el("tbody");
  main.append(el("h1", {text: t("ui.runs")}), el("div", {class: "filters"}, Object.values(filters), compare),
              el("table", {id: "runs"}, el("thead", {}, el("tr", {}, ["", "ui.name", "ui.status", "ui.method", "ui.model", "steps",
                "ui.best_eval_loss", "ui.main_metric", "ui.checklist", "created"].map((k) => el("th", {text: k ? t(k) : ""})))), body));
  let rows = [];
  const fill = (select, values) => {
    const keep = select.value;
    select.innerHTML = "";
    select.append(el("option", {value: "", text: t("ui.all")}), ...values.map((v) => el("option", {value: v, text: v})));
    select.value = values.includes(keep) ? keep : "";
  };
  const draw = () => {
    const text = filters.text.value.toLowerCase();
    const shown = rows.filter((r) => (!filters.status.value || r.status === filters.status.value) &&
      (!filters.method.value || r.method === filters.method.value) &&
      (!text || (r.name + " " + (r.model || "")).toLowerCase().includes(text)));
    body.innerHTML = "";
    for (const r of shown) {
      const metric = r.main_metric ? `${r.main_metric}: ${fmt(r.main_metric_base)} → ${fmt(r.main_metric_value)}` : "";
      body.append(el("tr", {"data-run": r.name},
        el("td", {}, el("input", {type: "checkbox", class: "pick", value: r.name})),
        el("td", {}, el("a", {href: "/run?name=" + encodeURIComponent(r.name), text: r.name})),
        el("td", {class: "status-" + r.status.replace("?", ""), text: r.status}), el("td", {text: r.method || ""}),
        el("td", {text: r.model || ""}), el("td", {class: "num", text: fmt(r.steps)}), el("td", {class: "num", text: fmt(r.best_eval_loss)}),
        el("td", {text: metric}),
        el("td", {class: "progress", text: `${r.checklist_done}/${r.checklist_total}` + (r.checklist_flags ? ` (! ${r.checklist_flags})` : "")}),
        el("td", {text: r.created_at || ""})));
    }
    body.dataset.count = String(shown.length);
  };
  for (const f of Object.values(filters)) { f.addEventListener("input", draw); f.addEventListener("change", draw); }
  const load = async () => {
    rows = (await api("/api/runs")).runs;
    fill(filters.status, [...new Set(rows.map((r) => r.status))].sort());
    fill(filters.method, [...new Set(rows.map((r) => r.method).filter(Boolean))].sort());
    draw();
    document.body.dataset.loaded = "1";
  };
  await load();
  setInterval(load, 5000);
}

async function pageRun() {
  await boot("runs");
  const name = query("name");
  const main = document.querySelector("main");
  const head = el("div", {id: "head"}), actions = el("div", {id: "actions"}), chartsBox = el("div", {class: "charts"});
  const warnings = el("div", {id: "warnings"}), checklistBox = el("div"), report = el("div", {id: "report"});
  main.append(el("h1", {text: name}), head, actions, el("h2", {text: t("ui.curves")}), chartsBox,
              el("h2", {text: t("ui.warnings")}), warnings, checklistBox, report);
  const charts = {loss: new Chart(chartsBox, "loss"), lr: new Chart(chartsBox, "learning rate"), memory: new Chart(chartsBox, "memory")};
  let info = null;
  const refresh = async () => {
    try { info = await api(`/api/runs/${encodeURIComponent(name)}?lang=${LANG}`); } catch (e) { head.textContent = e.message; return false; }
    const r = info.row;
    head.innerHTML = "";
    head.append(el("p", {}, el("b", {id: "status", class: "status-" + r.status, text: r.status}),
      ` · ${r.method || ""} · ${r.model || ""}` + (r.steps ? ` · ${r.steps} steps` : ""), r.error ? [el("br"), el("span", {class: "error", text: r.error})] : null));
    actions.innerHTML = "";
    if (["running", "validating", "queued"].includes(r.status))
      actions.append(el("button", {id: "cancel", text: t("ui.cancel"), onclick: async (e) => {
        e.target.disabled = true;
        try { await post(`/api/runs/${encodeURIComponent(name)}/cancel`); } catch (err) { actions.append(el("span", {class: "error", text: err.message})); }
      }}));
    if (["cancelled", "interrupted"].includes(r.status))
      actions.append(el("button", {id: "resume", text: t("ui.resume"), onclick: async () => { await post(`/api/runs/${encodeURIComponent(name)}/resume`); setTimeout(refresh, 1500); }}));
    warnings.innerHTML = "";
    warnings.append(info.warnings.length ? el("ul", {}, info.warnings.map((w) => el("li", {class: w.kind === "error" ? "flag" : "", text: `step ${w.step}: ${w.event}: ${w.message}`})))
                                         : el("p", {text: t("ui.no_warnings")}));
    checklistBox.innerHTML = "";
    checklistBox.append(checklistTable(name, info.checklist));
    if (info.has_report && !report.querySelector("iframe"))
      report.append(el("h2", {text: t("ui.report")}), el("iframe", {src: `/runs/${encodeURIComponent(name)}/files/report.html`}));
    return true;
  };
  while (!(await refresh())) await new Promise((ok) => setTimeout(ok, 1000));  // a run just started: its folder appears
  const stream = new EventSource(`/api/runs/${encodeURIComponent(name)}/metrics/stream`);
  const draw = () => { for (const c of Object.values(charts)) c.render(); };
  stream.addEventListener("records", (e) => { addRecords(charts, JSON.parse(e.data)); draw(); });
  stream.addEventListener("reset", () => { for (const c of Object.values(charts)) c.clear(); });
  stream.addEventListener("end", () => { stream.close(); refresh(); });
  draw();
  const timer = setInterval(async () => { await refresh(); if (stream.readyState === 2) clearInterval(timer); }, 2000);
}

async function pageCompare() {
  await boot("compare");
  const names = (query("runs") || "").split(",").filter(Boolean);
  const main = document.querySelector("main");
  main.append(el("h1", {text: t("ui.compare") + ": " + names.join(", ")}));
  if (names.length < 2) main.append(el("p", {text: "pick two or more runs on the runs page (checkboxes), or /compare?runs=A,B"}));
  const chartsBox = el("div", {class: "charts"});
  main.append(el("h2", {text: t("ui.curves")}), chartsBox);
  const charts = {loss: new Chart(chartsBox, "loss"), lr: new Chart(chartsBox, "learning rate")};
  const infos = {};
  for (const name of names) {
    addRecords(charts, (await api(`/api/runs/${encodeURIComponent(name)}/metrics`)).records, name);
    infos[name] = await api(`/api/runs/${encodeURIComponent(name)}?lang=${LANG}`);
  }
  for (const c of Object.values(charts)) c.render();
  const metrics = [...new Set(names.flatMap((n) => Object.keys(infos[n].comparison?.metrics || {})))];
  const rows = [el("tr", {}, el("th", {text: "metric"}), names.map((n) => el("th", {text: n})))];
  const cell = (n, m) => {
    const c = infos[n].comparison, entry = c?.metrics?.[m];
    if (!entry) return el("td", {text: ""});
    const model = (c.models || []).includes("tuned") ? "tuned" : c.headline || c.models.at(-1);
    const ci = entry.intervals?.[model], d = entry.deltas?.[model];
    return el("td", {class: "num", "data-metric": m},
      `${fmt(entry.values[model])}` + (ci ? ` [${fmt(ci[0])}, ${fmt(ci[1])}]` : ""),
      d && d.delta !== undefined ? [el("br"), el("small", {text: `Δ vs ${c.baseline}: ${d.delta >= 0 ? "+" : ""}${fmt(d.delta)}` + (d.ci ? ` [${fmt(d.ci[0])}, ${fmt(d.ci[1])}]` : "")})] : null);
  };
  rows.push(el("tr", {}, el("td", {text: t("ui.status")}), names.map((n) => el("td", {text: infos[n].row.status}))));
  rows.push(el("tr", {}, el("td", {text: t("ui.method")}), names.map((n) => el("td", {text: infos[n].row.method || ""}))));
  rows.push(el("tr", {}, el("td", {text: t("ui.best_eval_loss")}), names.map((n) => el("td", {class: "num", text: fmt(infos[n].row.best_eval_loss)}))));
  for (const m of metrics) rows.push(el("tr", {}, el("td", {text: m}), names.map((n) => cell(n, m))));
  rows.push(el("tr", {}, el("td", {text: t("ui.checklist")}), names.map((n) => el("td", {text: infos[n].checklist.progress_text}))));
  main.append(el("h2", {text: t("ui.metrics") + " (95% CI)"}), el("table", {id: "compare-metrics"}, rows));
  document.body.dataset.loaded = "1";
}

async function pagePlayground() {
  await boot("playground");
  const main = document.querySelector("main");
  const runs = (await api("/api/runs")).runs.filter((r) => r.status === "succeeded");
  const pick = el("select", {id: "pg-run"}, runs.map((r) => el("option", {value: r.name, text: r.name})));
  if (query("run")) pick.value = query("run");
  const prompt = el("textarea", {id: "pg-prompt", rows: 3, cols: 80});
  const send = el("button", {id: "pg-send", text: t("ui.send")});
  const cols = el("div", {class: "cols", id: "pg-answers"});
  const note = el("p", {class: "help", id: "pg-note"});
  main.append(el("h1", {text: t("ui.playground")}), el("p", {}, pick), el("p", {}, t("ui.prompt"), el("br"), prompt), send, note, cols);
  let variants = [];
  const load = async () => {
    cols.innerHTML = ""; send.disabled = true; note.textContent = "loading…";
    try { variants = (await api(`/api/playground/${encodeURIComponent(pick.value)}/variants`)).variants; note.textContent = ""; }
    catch (e) { note.textContent = e.message; return; }
    for (const v of variants) cols.append(el("div", {"data-variant": v}, el("h3", {text: v}), el("div", {class: "answer"}), el("div", {class: "help stats"})));
    send.disabled = false;
  };
  pick.addEventListener("change", load);
  send.addEventListener("click", () => {
    for (const v of variants) {
      const box = cols.querySelector(`[data-variant="${CSS.escape(v)}"]`), answer = box.querySelector(".answer"), stats = box.querySelector(".stats");
      answer.textContent = ""; stats.textContent = ""; box.dataset.done = "";
      const url = `/api/playground/${encodeURIComponent(pick.value)}/stream?variant=${encodeURIComponent(v)}&prompt=${encodeURIComponent(prompt.value)}`;
      const source = new EventSource(url);
      source.addEventListener("delta", (e) => { answer.textContent += JSON.parse(e.data).delta; });
      source.addEventListener("done", (e) => {
        const d = JSON.parse(e.data); source.close(); box.dataset.done = "1";
        stats.textContent = `${d.tokens} tokens, ${d.finish_reason}, first token ${fmt(d.ttft_s, 2)} s, total ${fmt(d.latency_s, 2)} s`;
      });
      source.addEventListener("failed", (e) => { source.close(); box.dataset.done = "1"; stats.textContent = JSON.parse(e.data).error; stats.className = "error"; });
      source.onerror = () => source.close();
    }
  });
  if (runs.length) await load(); else note.textContent = "no succeeded run yet";
}

async function pageNew() {
  await boot("new");
  const main = document.querySelector("main");
  const configs = (await api("/api/configs")).configs;
  const pick = el("select", {id: "cfg"}, configs.map((c) => el("option", {value: c.path, text: c.label})));
  const form = el("div", {id: "fields"}), general = el("div", {class: "error", id: "general"}), state = el("p", {id: "valid"});
  const estimate = el("pre", {id: "estimate-out"}), started = el("p", {id: "started"});
  const buttons = el("p", {},
    el("button", {id: "estimate", text: t("ui.estimate"), onclick: async () => {
      estimate.textContent = "…";
      try { const r = await post("/api/config/estimate", {path: pick.value, values: values()}); estimate.textContent = r.output; }
      catch (e) { estimate.textContent = e.message; }
    }}), " ",
    el("button", {id: "start", text: t("ui.start"), onclick: async () => {
      try { const r = await post("/api/runs", {path: pick.value, values: values()}); location.href = "/run?name=" + encodeURIComponent(r.name); }
      catch (e) { started.textContent = e.message; started.className = "error"; }
    }}));
  main.append(el("h1", {text: t("ui.new_run")}), el("p", {}, t("ui.config") + ": ", pick), state, general, form, buttons, started, estimate);
  const values = () => Object.fromEntries([...form.querySelectorAll("input")].map((i) => [i.name, i.value]));
  let timer = null;
  const validate = async () => {
    const r = await post("/api/config/check", {path: pick.value, values: values()});
    for (const box of form.querySelectorAll(".field")) {
      const message = r.errors[box.dataset.key];
      box.classList.toggle("bad", Boolean(message));
      box.querySelector(".error").textContent = message || "";
    }
    general.textContent = r.general.join("\n");
    state.textContent = r.ok ? "✓ " + t("ui.valid") : "";
    state.dataset.ok = r.ok ? "1" : "0";
    document.getElementById("start").disabled = !r.ok;
  };
  const load = async () => {
    form.innerHTML = "";
    const {fields} = await api("/api/config?path=" + encodeURIComponent(pick.value));
    let section = null;
    for (const f of fields) {
      if (f.section !== section) { section = f.section; form.append(el("h2", {text: section || "run"})); }
      const input = el("input", {name: f.key, value: f.value, id: "field-" + f.key});
      input.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(validate, 250); });
      form.append(el("div", {class: "field", "data-key": f.key}, el("label", {for: "field-" + f.key, text: f.key}),
        el("div", {}, input, el("div", {class: "error"}), f.help ? el("div", {class: "help", text: f.help}) : null)));
    }
    await validate();
  };
  pick.addEventListener("change", load);
  if (configs.length) await load();
}
