// Schedules: each with its cron and time zone, next fire time, state (paused and why), its last
// fires (started, skipped and why) and pause/resume/run-now for admins; then the templates.
// Read again every 15 s and on Refresh (a schedule changes rarely; fires once a minute at most).

import * as api from "../api.js";
import { h, replace } from "../dom.js";
import { visible, when } from "../format.js";
import { actionButton, badge, errorNote } from "./common.js";

const EVERY_MS = 15000;

function targetText(t) {
  if (!t) return "";
  if (t.kind === "template") {
    const params = Object.entries(t.params || {}).map(([k, v]) => `${k}=${v}`).join(" ");
    return `template ${t.template}${params ? ` ${params}` : ""}`;
  }
  if (t.kind === "pipeline") return `pipeline ${String(t.pipeline || "").split("\n")[0]}`;
  return [t.command, ...(t.arguments || [])].join(" ");
}

function fireLink(f) {
  if (f.job_id) return h("a", { href: `#/jobs/${encodeURIComponent(f.job_id)}`, class: "mono" }, visible(f.job_id));
  if (f.run_id) return h("a", { href: `#/pipelines/${encodeURIComponent(f.run_id)}`, class: "mono" }, visible(f.run_id));
  return "";
}

function fireLine(f) {
  const outcome = f.result || f.outcome;
  const covers = f.covers > 1 ? ` ×${f.covers}` : "";
  return h(
    "li",
    { class: "fire", dataset: { outcome: visible(f.outcome), fire: visible(f.id) } },
    h("span", { title: visible(f.scheduled_at) }, when(f.scheduled_at)),
    " ",
    badge(outcome),
    covers ? h("span", null, visible(covers)) : "",
    f.manual ? h("span", { class: "muted" }, " run now") : "",
    " ",
    fireLink(f),
    f.reason ? h("span", { class: "c-reason" }, ` ${visible(f.reason)}`) : "",
  );
}

export function mount(container, route, ctx) {
  document.title = "Schedules · Hodei";
  let gone = false;
  let timer = null;
  const tbody = h("tbody");
  const templates = h("tbody");
  container.append(
    h(
      "section",
      { class: "page" },
      h("div", { class: "page-head" }, h("h1", null, "Schedules"), h("div", { class: "actions" }, h("button", { type: "button", class: "btn small", onclick: () => load() }, "Refresh"))),
      h("div", { class: "table-wrap" }, h("table", { class: "list schedules-table", "aria-label": "Schedules" },
        h("thead", null, h("tr", null, ["Name", "Cron", "Next fire", "State", "Runs", "Last fires", ""].map((c) => h("th", { scope: "col" }, c)))),
        tbody)),
      h("h2", null, "Templates"),
      h("div", { class: "table-wrap" }, h("table", { class: "list templates-table", "aria-label": "Templates" },
        h("thead", null, h("tr", null, ["Name", "Version", "Kind", "Description", "Created"].map((c) => h("th", { scope: "col" }, c)))),
        templates)),
    ),
  );

  function actions(s) {
    if (!ctx.can("admin")) return "";
    const path = `/api/v1/schedules/${encodeURIComponent(s.name)}`;
    const buttons = [
      s.paused
        ? actionButton(ctx, "Resume", async () => { await api.post(`${path}/resume`); load(); }, { small: true, data: { action: "resume" } })
        : actionButton(ctx, "Pause", async () => { await api.post(`${path}/pause`, {}); load(); }, { small: true, data: { action: "pause" } }),
      actionButton(ctx, "Run now", async () => { await api.post(`${path}/run`); load(); }, { small: true, data: { action: "run-now" }, done: "fired" }),
    ];
    return h("div", { class: "actions" }, ...buttons);
  }

  function row(s) {
    const state = s.paused ? h("span", null, badge("paused"), h("span", { class: "c-reason" }, ` ${visible(s.pause_reason)}`)) : badge("active");
    const next = s.next_fire ? h("span", { title: visible((s.upcoming_local || [])[0] || s.next_fire) }, when(s.next_fire)) : "—";
    return h(
      "tr",
      { dataset: { schedule: visible(s.name) } },
      h("td", { class: "mono" }, visible(s.name)),
      h("td", { class: "mono" }, visible(`${s.cron} ${s.timezone}`)),
      h("td", { class: "c-next" }, next),
      h("td", { class: "c-state" }, state),
      h("td", { class: "mono c-reason" }, visible(targetText(s.target))),
      h("td", null, h("ul", { class: "fires" }, (s.fires || []).map(fireLine))),
      h("td", null, actions(s)),
    );
  }

  function templateRow(t) {
    return h(
      "tr",
      { dataset: { template: visible(t.name) } },
      h("td", { class: "mono" }, visible(t.name)),
      h("td", null, visible(String(t.version))),
      h("td", null, visible(t.kind)),
      h("td", { class: "c-reason" }, visible(t.description)),
      h("td", { title: visible(t.created_at) }, when(t.created_at)),
    );
  }

  async function load() {
    clearTimeout(timer);
    try {
      const [list, temps] = await Promise.all([api.get("/api/v1/schedules?fires=5"), api.get("/api/v1/templates")]);
      if (gone) return;
      replace(tbody, (list.items || []).map(row));
      if (!tbody.children.length) tbody.appendChild(h("tr", { class: "empty" }, h("td", { colspan: "7" }, "No schedules.")));
      replace(templates, (temps.items || []).map(templateRow));
      if (!templates.children.length) templates.appendChild(h("tr", { class: "empty" }, h("td", { colspan: "5" }, "No templates.")));
    } catch (err) {
      if (!gone) replace(tbody, h("tr", null, h("td", { colspan: "7" }, errorNote(err))));
    }
    if (!gone) timer = setTimeout(load, EVERY_MS);
  }

  load();
  return () => {
    gone = true;
    clearTimeout(timer);
  };
}
