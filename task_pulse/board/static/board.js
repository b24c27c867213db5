// task-pulse board: the page's only script (served by the board itself; no framework, no build step).
// Everything from a task goes into the page as text (textContent, SVG <title>), never as markup.
"use strict";
(() => {
  const WORDS = {
    en: {attention: "Needs attention", failed: "Failed", running: "Running", finished: "Finished",
      empty: "📭 no tasks", more: "{n} more not listed (the page shows the {limit} most worth seeing)",
      live: "live", off: "reconnecting…", left: "≈ {d} left", stalled: "no update for {d}", overdue: "overdue",
      waiting: "waiting for the next step", history: "Past runs of this name", noHistory: "no finished run yet",
      typical: "typical {d}", overdueAfter: "overdue after {d}", notes: "Notifications",
      pending: "pending", tries: "{n} tries", delivered: "{at} · {by}", owner: "owner", host: "host",
      startedAt: "started {at}", finishedAt: "finished {at}", runs: "{n} runs", invalid: "unreadable"},
    zh: {attention: "需要关注", failed: "失败", running: "执行中", finished: "已结束",
      empty: "📭 没有任务", more: "还有 {n} 个未列出（页面显示最值得看的 {limit} 个）",
      live: "实时", off: "重新连接…", left: "预计还需 {d}", stalled: "{d}无更新", overdue: "超时",
      waiting: "等待下一步", history: "同名任务的历史", noHistory: "还没有结束的运行",
      typical: "通常 {d}", overdueAfter: "超过 {d} 算超时", notes: "通知",
      pending: "待发送", tries: "尝试 {n} 次", delivered: "{at} · {by}", owner: "所有者", host: "主机",
      startedAt: "开始 {at}", finishedAt: "结束 {at}", runs: "{n} 次", invalid: "无法读取"},
  };
  const STEP_ICONS = {done: "✅", running: "🔄", pending: "⏳", error: "❌"};
  const STATE_ICONS = {stalled: "⚠️", overdue: "⏰", running: "🔄", waiting: "⏳", done: "✅", error: "❌", invalid: "🚫"};
  const GROUP = {invalid: "attention", stalled: "attention", overdue: "attention", error: "failed",
    running: "running", waiting: "running", done: "finished"};
  const MAX_STEP_ICONS = 24;
  const SVG = "http://www.w3.org/2000/svg";

  // The state of the page, readable by tests and the benchmark: when the first view was on the page (ms since
  // the navigation began), how many updates arrived since, and when the last one was on the page (unix ms).
  const board = {version: 0, records: new Map(), order: [], rows: new Map(), counts: {}, lang: "en", skew: 0,
    renderedAt: 0, updates: 0, lastUpdateAt: 0, selected: null, meta: {}};
  window.taskPulseBoard = board;

  const $ = (id) => document.getElementById(id);
  const words = () => WORDS[board.lang] || WORDS.en;
  const say = (key, fields = {}) => words()[key].replace(/\{(\w+)\}/g, (_, f) => String(fields[f] ?? ""));

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function svg(tag, attrs = {}) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }

  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    if (board.lang === "zh") {
      if (s < 60) return `${r}秒`;
      if (s < 3600) return r ? `${m}分${r}秒` : `${m}分钟`;
      return m ? `${h}小时${m}分` : `${h}小时`;
    }
    if (s < 60) return `${r}s`;
    return s < 3600 ? `${m}m${r}s` : `${h}h${m}m`;
  }

  function when(unix) {
    if (unix === null || unix === undefined) return "";
    const d = new Date(unix * 1000), pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  const now = () => Date.now() / 1000 + board.skew;

  // Time left as a forecast says it: whole minutes, never seconds (a forecast is no stopwatch).
  function eta(seconds) {
    const all = Math.round(Math.max(0, seconds) / 60), h = Math.floor(all / 60), m = all % 60;
    if (board.lang === "zh") return h ? (m ? `${h}小时${m}分` : `${h}小时`) : (m ? `${m}分` : "不到1分");
    return h ? (m ? `${h}h${m}m` : `${h}h`) : (m ? `${m}m` : "<1m");
  }

  // -- the list ------------------------------------------------------------------------------------

  function timeText(t) {
    if (t.state === "invalid") return "";
    if (t.stalled && t.updatedAt) return say("stalled", {d: duration(now() - t.updatedAt)});
    const end = t.status === "running" ? now() : (t.finishedAt || t.updatedAt);
    let text = t.startedAt && end ? duration(end - t.startedAt) : "";
    if (t.status === "running" && t.etaAt) text += ` · ${say("left", {d: eta(t.etaAt - now())})}`;
    return text;
  }

  function nowText(t) {
    if (t.state === "invalid") return `${say("invalid")}: ${t.invalid}`;
    if (t.status === "error") return t.error || "";
    if (t.status === "done") return t.result || "";
    const step = t.steps.find((s) => s.status === "running");
    if (!step) return say("waiting");
    const detail = [step.percent !== null && step.percent !== undefined ? `${step.percent}%` : "", step.message || ""]
      .filter(Boolean).join(" ");
    const late = t.overdue.length ? ` · ⏰ ${t.overdue.map((s) => s || say("overdue")).join(", ")}` : "";
    return `${step.name}${detail ? ": " + detail : ""}${late}`;
  }

  function row(t) {
    const node = el("div", `task state-${t.state}`);
    node.dataset.key = t.key;
    node.append(el("span", "icon", STATE_ICONS[t.state] || "•"));
    const name = el("span", "name", t.state === "invalid" ? `${t.taskId}.json` : t.name);
    name.title = t.taskId;
    if (t.owner) {
      const owner = el("span", "owner", t.owner);
      owner.title = say("owner");
      name.append(owner);
    }
    node.append(name);
    const host = el("span", t.host ? "hostname" : "", t.host || "");
    if (t.host) host.title = say("host");
    node.append(host);
    const steps = el("span", "steps");
    for (const s of (t.steps || []).slice(0, MAX_STEP_ICONS)) {
      const icon = el("span", "", STEP_ICONS[s.status] || "•");
      icon.title = `${s.name}${s.message ? ": " + s.message : ""}`;
      steps.append(icon);
    }
    if ((t.steps || []).length > MAX_STEP_ICONS) steps.append(el("span", "", ` +${t.steps.length - MAX_STEP_ICONS}`));
    node.append(steps);
    const progress = el("span", "progress");
    if (t.state !== "invalid") {
      const bar = el("progress");
      bar.max = Math.max(1, t.total);
      bar.value = t.done;
      progress.append(bar, el("span", "", `${t.done}/${t.total}`));
    }
    node.append(progress, el("span", "time", timeText(t)), el("div", "now", nowText(t)));
    if (board.selected === t.key) node.classList.add("selected");
    node.addEventListener("click", () => select(t.key));
    return node;
  }

  function place() {
    const groups = {attention: $("attention"), failed: $("failed"), running: $("running"), finished: $("finished")};
    const sizes = {attention: 0, failed: 0, running: 0, finished: 0};
    for (const key of board.order) {
      const t = board.records.get(key);
      let node = board.rows.get(key);
      if (!node) {
        node = row(t);
        board.rows.set(key, node);
      }
      const group = GROUP[t.state] || "running";
      groups[group].append(node);  // in order: appending moves a row that is there already
      sizes[group] += 1;
    }
    for (const [name, size] of Object.entries(sizes)) {
      const title = $(`${name}-title`);
      title.textContent = `${words()[name]} (${size})`;
      if (name === "finished") $("finished-box").hidden = size === 0;
      else title.hidden = size === 0;
    }
  }

  function head(v) {
    board.version = v.version;
    board.counts = v.counts || {};
    const c = board.counts;
    $("counts").textContent = `🔄${c.running || 0} ⚠️${c.stalled || 0} ✅${c.done || 0} ❌${c.error || 0}` +
      (c.unreadable ? ` 🚫${c.unreadable}` : "");
    const note = $("note");
    note.hidden = !v.note;
    note.textContent = v.note || "";
    const more = $("more");
    more.hidden = !v.more;
    more.textContent = v.more ? say("more", {n: v.more, limit: board.meta.limit}) : "";
    document.body.dataset.version = String(v.version);
  }

  function full(v) {
    board.meta = {where: v.where, shared: v.shared, limit: v.limit};
    board.lang = v.lang === "zh" ? "zh" : "en";
    board.skew = v.now ? v.now - Date.now() / 1000 : 0;  // the server's clock, which the times are on
    document.documentElement.lang = board.lang === "zh" ? "zh-CN" : "en";
    $("where").textContent = v.where || "";
    for (const node of board.rows.values()) node.remove();
    board.rows.clear();
    board.records = new Map(v.tasks.map((t) => [t.key, t]));
    board.order = v.tasks.map((t) => t.key);
    head(v);
    place();
    $("empty").hidden = board.order.length > 0;
    $("empty").textContent = say("empty");
    if (board.selected && !board.records.has(board.selected)) closeDetail();
    if (!board.renderedAt) board.renderedAt = performance.now();
  }

  function delta(d) {
    if (d.version <= board.version) return;  // already in the view the stream began with
    for (const key of d.removed) {
      board.records.delete(key);
      board.rows.get(key)?.remove();
      board.rows.delete(key);
    }
    let selectedChanged = false;
    for (const t of d.changed) {
      board.records.set(t.key, t);
      const old = board.rows.get(t.key);
      const fresh = row(t);
      board.rows.set(t.key, fresh);
      if (old) old.replaceWith(fresh);
      if (t.key === board.selected) selectedChanged = true;
    }
    if (d.order) board.order = d.order;
    head(d);
    if (d.order || d.removed.length || d.changed.length) place();
    $("empty").hidden = board.order.length > 0;
    board.updates += 1;
    board.lastUpdateAt = Date.now();
    if (selectedChanged) loadDetail(board.selected);
    if (board.selected && !board.records.has(board.selected)) closeDetail();
  }

  function tick() {
    for (const [key, node] of board.rows) {
      const t = board.records.get(key);
      if (t && t.status === "running") node.querySelector(".time").textContent = timeText(t);
    }
  }

  function setLive(on) {
    const live = $("live");
    live.classList.toggle("off", !on);
    live.textContent = on ? say("live") : say("off");
  }

  function connect() {
    const stream = new EventSource("/events");
    stream.addEventListener("board", (e) => { full(JSON.parse(e.data)); setLive(true); });
    stream.addEventListener("delta", (e) => delta(JSON.parse(e.data)));
    stream.addEventListener("open", () => setLive(true));
    stream.addEventListener("error", () => setLive(false));  // EventSource reconnects by itself
  }

  // -- one task in detail ----------------------------------------------------------------------------

  function select(key) {
    board.selected = key;
    for (const [k, node] of board.rows) node.classList.toggle("selected", k === key);
    loadDetail(key);
  }

  function closeDetail() {
    board.selected = null;
    $("detail").hidden = true;
    for (const node of board.rows.values()) node.classList.remove("selected");
  }

  async function loadDetail(key) {
    const response = await fetch(`/api/task?key=${encodeURIComponent(key)}`, {credentials: "same-origin"});
    if (board.selected !== key) return;
    if (!response.ok) { closeDetail(); return; }
    showDetail(await response.json());
  }

  function showDetail(d) {
    const t = d.task;
    $("detail").hidden = false;
    $("detail-title").textContent = t.state === "invalid" ? `${t.taskId}.json` : t.name;
    const meta = [t.taskId, t.host ? `${say("host")} ${t.host}` : "", t.owner ? `${say("owner")} ${t.owner}` : "",
      t.startedAt ? say("startedAt", {at: when(t.startedAt)}) : "",
      t.finishedAt ? say("finishedAt", {at: when(t.finishedAt)}) : ""].filter(Boolean);
    $("detail-meta").textContent = meta.join(" · ");
    $("detail-card").textContent = d.card || (t.invalid ? `${say("invalid")}: ${t.invalid}` : "");
    const history = d.history;
    $("history-title").textContent = say("history");
    const chart = $("chart");
    chart.replaceChildren();
    if (history && history.runs.length) {
      const facts = [say("runs", {n: history.runs.length})];
      if (history.typicalSeconds) facts.push(say("typical", {d: duration(history.typicalSeconds)}));
      if (history.overdueAfterSeconds) facts.push(say("overdueAfter", {d: duration(history.overdueAfterSeconds)}));
      $("history-meta").textContent = facts.join(" · ");
      chart.append(drawRuns(history), legend(history));
    } else {
      $("history-meta").textContent = say("noHistory");
    }
    $("notes-title").textContent = say("notes");
    const body = $("notes").tBodies[0];
    body.replaceChildren();
    for (const n of d.notifications || []) {
      const tr = el("tr");
      tr.append(el("td", "when", n.createdAt.replace("T", " ").slice(0, 19)), el("td", "kind", n.kind),
        el("td", "text", n.text));
      const where = n.deliveredAt
        ? el("td", "delivered", say("delivered", {at: n.deliveredAt.replace("T", " ").slice(0, 19), by: n.deliveredBy}))
        : el("td", "pending", [say("pending"), n.attempts ? say("tries", {n: n.attempts}) : "", n.lastError || ""]
          .filter(Boolean).join(" · "));
      tr.append(where);
      body.append(tr);
    }
  }

  // Past runs, oldest on the left: one bar per run, its height the run's duration, split into its steps
  // (one colour per step, the same step the same colour in every run); a failed run outlined in red.
  function drawRuns(history) {
    const runs = history.runs, width = 560, height = 180, top = 14, bottom = 22, left = 36;
    const tallest = Math.max(1, history.typicalSeconds || 0, ...runs.map((r) => r.seconds || 0));
    const scale = (height - top - bottom) / tallest;
    const slot = (width - left - 4) / Math.max(runs.length, 8);
    const names = stepNames(history);
    const root = svg("svg", {viewBox: `0 0 ${width} ${height}`, role: "img", class: "runs"});
    const title = svg("title");
    title.textContent = say("history");
    root.append(title, svg("line", {x1: left, y1: height - bottom, x2: width, y2: height - bottom, class: "axis"}));
    const label = svg("text", {x: 2, y: top + 4});
    label.textContent = duration(tallest);
    root.append(label);
    runs.forEach((run, i) => {
      const x = left + i * slot + slot * 0.15, w = slot * 0.7;
      const bar = svg("g", {class: `run-bar ${run.outcome}`});
      let y = height - bottom;
      const known = run.steps.filter((s) => s.seconds !== null);
      for (const s of known) {
        const h = Math.max(0.5, s.seconds * scale);
        y -= h;
        const part = svg("rect", {x, y, width: w, height: h, class: `s${names.indexOf(s.name) % 8}`});
        const tip = svg("title");
        tip.textContent = `${s.name}: ${duration(s.seconds)}`;
        part.append(tip);
        bar.append(part);
      }
      const total = run.seconds !== null ? run.seconds * scale : height - bottom - y;
      const outline = svg("rect", {x, y: height - bottom - Math.max(total, 1), width: w, height: Math.max(total, 1),
        fill: "none", class: run.outcome === "done" ? "" : "failed"});
      const tip = svg("title");
      tip.textContent = `${when(run.at)} · ${run.seconds !== null ? duration(run.seconds) : "?"} · ${run.outcome}` +
        (known.length ? ` · ${known.map((s) => `${s.name} ${duration(s.seconds)}`).join(", ")}` : "");
      outline.append(tip);
      bar.append(outline);
      if (run.outcome !== "done") {
        const cross = svg("text", {x: x + w / 2 - 4, y: height - bottom - Math.max(total, 1) - 3, class: "cross"});
        cross.textContent = "×";
        bar.append(cross);
      }
      root.append(bar);
    });
    if (history.typicalSeconds) {
      const y = height - bottom - history.typicalSeconds * scale;
      root.append(svg("line", {x1: left, y1: y, x2: width, y2: y, class: "typical"}));
    }
    const first = svg("text", {x: left, y: height - 6});
    first.textContent = when(runs[0].at);
    const last = svg("text", {x: width - 90, y: height - 6});
    last.textContent = runs.length > 1 ? when(runs[runs.length - 1].at) : "";
    root.append(first, last);
    return root;
  }

  function stepNames(history) {
    const names = [];
    for (const run of history.runs) for (const s of run.steps) if (!names.includes(s.name)) names.push(s.name);
    return names;
  }

  function legend(history) {
    const box = el("div", "legend");
    stepNames(history).forEach((name, i) => {
      const item = el("span");
      item.append(el("span", `swatch s${i % 8}`), document.createTextNode(name));
      box.append(item);
    });
    return box;
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("close").addEventListener("click", closeDetail);
    connect();
    setInterval(tick, 1000);
  });
})();
