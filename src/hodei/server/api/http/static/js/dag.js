// A pipeline run drawn as an SVG graph: steps in columns by topological depth (a step is one
// column right of the deepest step it needs), an edge for each need, each node coloured by
// its status with its duration. The jobs of a matrix step are drawn inside one node, a row
// each. Every node (or matrix row) with a job is a button that selects that job.

import { s } from "./dom.js";
import { seconds, visible } from "./format.js";

const NODE_W = 200;
const GAP_X = 52;
const GAP_Y = 20;
const PAD = 16;
const SINGLE_H = 58;
const HEAD_H = 34;
const ROW_H = 24;
const CHAR_W = 7.3; // monospace 12px

const ICONS = { pending: "○", running: "◑", succeeded: "✓", failed: "✕", cancelled: "⊘", skipped: "↷", waiting: "‖" };

function fit(text, px) {
  const max = Math.max(3, Math.floor(px / CHAR_W));
  return text.length > max ? text.slice(0, max - 1) + "…" : text;
}

/** The status a group of jobs shows as one. */
export function groupStatus(rows) {
  const st = new Set(rows.map((r) => r.status));
  for (const s of ["failed", "running", "cancelled"]) if (st.has(s)) return s;
  if (st.has("pending")) return st.size === 1 ? "pending" : "running";
  if (st.size === 1) return rows[0].status;
  return st.has("succeeded") ? "succeeded" : rows[0].status;
}

function matrixLabel(row) {
  const m = row.matrix || {};
  const values = Object.values(m).map(visible);
  return values.length ? values.join(" · ") : visible(row.id);
}

/** Steps grouped by name, with depth and positions: {groups, width, height}. */
export function layout(steps) {
  const groups = new Map();
  for (const row of steps) {
    let g = groups.get(row.step);
    if (!g) {
      g = { name: row.step, rows: [], needs: [...(row.needs || [])], when: row.when, order: row.index ?? 0 };
      groups.set(row.step, g);
    }
    g.rows.push(row);
    g.order = Math.min(g.order, row.index ?? g.order);
  }
  const depth = new Map();
  const visiting = new Set();
  const depthOf = (name) => {
    if (depth.has(name)) return depth.get(name);
    if (visiting.has(name)) return 0; // a cycle (the server refuses them): do not recurse
    visiting.add(name);
    const g = groups.get(name);
    let d = 0;
    for (const need of g.needs) if (groups.has(need)) d = Math.max(d, depthOf(need) + 1);
    visiting.delete(name);
    depth.set(name, d);
    return d;
  };
  const layers = [];
  for (const g of groups.values()) {
    g.depth = depthOf(g.name);
    (layers[g.depth] ||= []).push(g);
    g.matrix = g.rows.length > 1 || g.rows.some((r) => r.matrix && Object.keys(r.matrix).length);
    g.height = g.matrix ? HEAD_H + ROW_H * g.rows.length + 8 : SINGLE_H;
  }
  for (let d = 0; d < layers.length; d++) {
    const layer = layers[d] || (layers[d] = []);
    layer.sort((a, b) => a.order - b.order);
    if (d > 0) {
      // Barycentre of the needs' places in the layers before: fewer crossing edges.
      const bary = (g) => {
        const places = g.needs.filter((n) => groups.has(n)).map((n) => groups.get(n).slot);
        return places.length ? places.reduce((x, y) => x + y, 0) / places.length : g.order;
      };
      layer.sort((a, b) => bary(a) - bary(b) || a.order - b.order);
    }
    layer.forEach((g, i) => (g.slot = i));
  }
  const heights = layers.map((layer) => layer.reduce((n, g) => n + g.height, 0) + GAP_Y * Math.max(0, layer.length - 1));
  const tallest = Math.max(SINGLE_H, ...heights);
  layers.forEach((layer, d) => {
    let y = PAD + (tallest - heights[d]) / 2;
    for (const g of layer) {
      g.x = PAD + d * (NODE_W + GAP_X);
      g.y = y;
      y += g.height + GAP_Y;
    }
  });
  return {
    groups,
    width: PAD * 2 + layers.length * NODE_W + Math.max(0, layers.length - 1) * GAP_X,
    height: PAD * 2 + tallest,
  };
}

function statusLine(row, awaiting) {
  if (awaiting) return "‖ awaits approval";
  const icon = ICONS[row.status] || "•";
  const d = row.duration_s === null || row.duration_s === undefined ? "" : ` · ${seconds(row.duration_s)}`;
  const cached = row.cached_from ? " · cached" : "";
  return `${icon} ${row.status}${d}${cached}`;
}

function tooltip(row, name) {
  const lines = [name, `status: ${row.status}`];
  if (row.job_id) lines.push(`job: ${row.job_id}`);
  if (row.reason) lines.push(row.reason);
  return visible(lines.join("\n")).replace(/\\x0a/g, "\n");
}

function clickable(el, row, label, onSelect) {
  if (!row.job_id) return;
  el.setAttribute("tabindex", "0");
  el.setAttribute("role", "button");
  el.setAttribute("aria-label", label);
  el.classList.add("clickable");
  el.addEventListener("click", (e) => {
    e.stopPropagation();
    onSelect(row);
  });
  el.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      onSelect(row);
    }
  });
}

/**
 * The graph of a run view (GET /api/v1/pipelines/{run}): an <svg>. `selected` is the job id
 * shown below it; `onSelect(stepRow)` is told of a click.
 */
export function drawDag(run, selected, onSelect) {
  const { groups, width, height } = layout(run.steps || []);
  const awaiting = new Set(run.awaiting_approval || []);
  const svg = s("svg", {
    class: "dag",
    width: String(width),
    height: String(height),
    viewBox: `0 0 ${width} ${height}`,
    role: "group",
    "aria-label": `Steps of run ${visible(run.id)}`,
  });
  svg.appendChild(
    s("defs", null,
      s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" },
        s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }))),
  );
  const edges = s("g", { class: "edges" });
  const nodes = s("g", { class: "nodes" });
  svg.append(edges, nodes);
  for (const g of groups.values()) {
    for (const need of g.needs) {
      const from = groups.get(need);
      if (!from) continue;
      const x1 = from.x + NODE_W;
      const y1 = from.y + from.height / 2;
      const x2 = g.x;
      const y2 = g.y + g.height / 2;
      const dx = Math.max(24, (x2 - x1) / 2);
      const st = groupStatus(from.rows);
      edges.appendChild(
        s("path", {
          d: `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2 - 2},${y2}`,
          class: `edge st-${st}`,
          "marker-end": "url(#arrow)",
          dataset: { from: need, to: g.name },
        }),
      );
    }
  }
  for (const g of groups.values()) {
    const status = awaiting.has(g.name) ? "waiting" : groupStatus(g.rows);
    const node = s("g", {
      class: `node st-${status}${g.matrix ? " matrix" : ""}`,
      transform: `translate(${g.x},${g.y})`,
      dataset: { step: g.name, status },
    });
    node.appendChild(s("rect", { class: "box", width: String(NODE_W), height: String(g.height), rx: "8", ry: "8" }));
    const name = visible(g.name);
    if (!g.matrix) {
      const row = g.rows[0];
      node.dataset.job = row.job_id || "";
      if (row.job_id && row.job_id === selected) node.classList.add("selected");
      node.append(
        s("title", null, tooltip(row, name)),
        s("text", { class: "name", x: "12", y: "24" }, fit(name + (g.when === "manual" ? " (manual)" : ""), NODE_W - 24)),
        s("text", { class: "status", x: "12", y: "44" }, fit(statusLine(row, awaiting.has(g.name)), NODE_W - 24)),
      );
      clickable(node, row, `${name}: ${row.status}, show its log`, onSelect);
    } else {
      const done = g.rows.filter((r) => r.status === "succeeded").length;
      node.append(
        s("title", null, `${name}: ${g.rows.length} jobs`),
        s("text", { class: "name", x: "12", y: "22" }, fit(`${name} (${done}/${g.rows.length})`, NODE_W - 24)),
      );
      g.rows.forEach((row, i) => {
        const y = HEAD_H + i * ROW_H;
        const sub = s("g", {
          class: `subjob st-${row.status}${row.job_id && row.job_id === selected ? " selected" : ""}`,
          transform: `translate(8,${y})`,
          dataset: { job: row.job_id || "", status: row.status, id: row.id },
        });
        const label = matrixLabel(row);
        const dur = row.duration_s === null || row.duration_s === undefined ? "" : seconds(row.duration_s);
        sub.append(
          s("title", null, tooltip(row, visible(row.id))),
          s("rect", { class: "pill", width: String(NODE_W - 16), height: String(ROW_H - 4), rx: "5", ry: "5" }),
          s("text", { class: "sub", x: "8", y: "15" }, fit(`${ICONS[row.status] || "•"} ${label}`, NODE_W - 80)),
          s("text", { class: "sub dur", x: String(NODE_W - 24), y: "15", "text-anchor": "end" }, dur),
        );
        clickable(sub, row, `${name} ${label}: ${row.status}, show its log`, onSelect);
        node.appendChild(sub);
      });
    }
    nodes.appendChild(node);
  }
  return svg;
}
