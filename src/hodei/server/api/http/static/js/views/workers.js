// Workers: provider, labels, capacity, CPU and memory from their last heartbeat, running jobs.
// Heartbeats change these figures every few seconds, so the list is read again every 5 s while
// the page is visible (and at once with "Refresh").

import * as api from "../api.js";
import { h, replace } from "../dom.js";
import { ago, bytes, pairs, visible, when } from "../format.js";
import { badge, errorNote } from "./common.js";

const EVERY_MS = 5000;

function meter(fraction, text) {
  const bar = h("span", { class: "meter", role: "img", "aria-label": text });
  const fill = h("span", { class: "fill" });
  fill.style.width = `${Math.max(0, Math.min(100, fraction * 100)).toFixed(0)}%`;
  bar.appendChild(fill);
  return h("span", { class: "meter-wrap" }, bar, ` ${text}`);
}

export function mount(container) {
  document.title = "Workers · Hodei";
  let timer = 0;
  let gone = false;
  const tbody = h("tbody");
  const problem = h("div");
  const updated = h("span", { class: "muted small", "aria-live": "polite" });
  container.append(
    h(
      "section",
      { class: "page" },
      h("div", { class: "page-head" }, h("h1", null, "Workers"), h("div", { class: "actions" }, updated, h("button", { type: "button", class: "btn small", onclick: () => load() }, "Refresh"))),
      problem,
      h("div", { class: "table-wrap" }, h("table", { class: "list workers-table", "aria-label": "Workers" },
        h("thead", null, h("tr", null, ["State", "Worker", "Provider / image", "Labels", "Capacity", "CPU", "Memory", "Jobs", "Heartbeat"].map((c) => h("th", { scope: "col" }, c)))),
        tbody)),
    ),
  );

  function row(w) {
    const cap = w.capacity || {};
    const res = w.reserved || {};
    const use = w.usage || {};
    const memTotal = use.memory_total_bytes || cap.memory_bytes || 0;
    const memFraction = memTotal ? (use.memory_bytes || 0) / memTotal : 0;
    const slots = `${res.slots ?? (w.running_jobs || []).length} of ${cap.slots ?? 0} slot${cap.slots === 1 ? "" : "s"}`;
    const reserved = res.cpus || res.memory_bytes ? `reserved ${res.cpus || 0} CPU, ${bytes(res.memory_bytes || 0)}` : "";
    const note = w.state === "reconnecting" && w.reconnect_by ? `lost ${ago(w.disconnected_at)}; waits until ${when(w.reconnect_by)}` : w.accepting === false && w.state !== "provisioning" ? "takes no new jobs" : "";
    return h(
      "tr",
      { dataset: { id: w.id, state: w.state } },
      h("td", null, badge(w.state), note ? h("div", { class: "muted small" }, note) : null),
      h("td", { class: "mono" }, visible(w.id), w.hostname ? h("div", { class: "muted small" }, visible(w.hostname)) : null, w.error ? h("div", { class: "note error small" }, visible(w.error)) : null),
      h("td", null, visible(w.provider), w.image ? h("div", { class: "muted small mono" }, visible(w.image)) : null),
      h("td", { class: "small" }, pairs(w.labels) || "-"),
      h("td", null, `${cap.cpus ?? 0} CPU, ${bytes(cap.memory_bytes || 0)}`, h("div", { class: "muted small" }, slots), reserved ? h("div", { class: "muted small" }, reserved) : null),
      h("td", null, meter((use.cpu_percent || 0) / 100, `${(use.cpu_percent || 0).toFixed(1)}%`)),
      h("td", null, meter(memFraction, `${bytes(use.memory_bytes || 0)}${memTotal ? ` of ${bytes(memTotal)}` : ""}`)),
      h("td", { class: "mono small" }, (w.running_jobs || []).length
        ? (w.running_jobs || []).map((j) => h("div", null, h("a", { href: `#/jobs/${encodeURIComponent(j)}` }, visible(j))))
        : "-"),
      h("td", { title: when(w.last_heartbeat) }, ago(w.last_heartbeat)),
    );
  }

  async function load() {
    clearTimeout(timer);
    try {
      const page = await api.get("/api/v1/workers");
      if (gone) return;
      const items = page.items || [];
      replace(tbody, items.map(row));
      if (!items.length) tbody.appendChild(h("tr", { class: "empty" }, h("td", { colspan: "9" }, "No workers: they are started when jobs need them.")));
      replace(problem, page.provisioning_error ? h("p", { class: "note error" }, `Provisioning: ${visible(page.provisioning_error)}`) : null);
      updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      if (gone) return;
      replace(problem, errorNote(err));
    }
    if (!gone) timer = setTimeout(() => !document.hidden && load(), EVERY_MS); // hidden: the visibility change reads it again
  }

  const onVisible = () => !document.hidden && load();
  document.addEventListener("visibilitychange", onVisible);
  load();
  return () => {
    gone = true;
    clearTimeout(timer);
    document.removeEventListener("visibilitychange", onVisible);
  };
}
