// Pipeline runs, newest first: state, steps done of total, when, why. The list is read again
// when a step job changes (heard on the job events stream), not on a timer.

import * as api from "../api.js";
import { debounce, h, replace } from "../dom.js";
import { ago, runOfJob, visible, when } from "../format.js";
import { badge, errorNote, streamDot } from "./common.js";

const STATES = ["", "running", "waiting", "succeeded", "failed", "cancelled"];
const DONE = new Set(["succeeded", "failed", "cancelled", "skipped"]);
const PAGE = 50;

function progress(counts) {
  const entries = Object.entries(counts || {});
  const total = entries.reduce((n, [, v]) => n + Number(v || 0), 0);
  const done = entries.reduce((n, [k, v]) => n + (DONE.has(k) ? Number(v || 0) : 0), 0);
  const bar = h("span", { class: "progress", "aria-hidden": "true" });
  for (const key of ["succeeded", "failed", "cancelled", "skipped", "running"]) {
    const n = Number((counts || {})[key] || 0);
    if (!n || !total) continue;
    const part = h("span", { class: `part st-${key}` });
    part.style.width = `${(100 * n) / total}%`;
    bar.appendChild(part);
  }
  return h("span", { class: "steps" }, bar, ` ${done}/${total}`);
}

export function mount(container, route, ctx) {
  document.title = "Pipelines · Hodei";
  let state = route.params.get("state") || "";
  let items = [];
  let next = null;
  let gone = false;
  const dot = streamDot();
  const select = h(
    "select",
    { "aria-label": "State", onchange: () => { state = select.value; history.replaceState(null, "", `#/pipelines${api.query({ state })}`); load(); } },
    STATES.map((s) => h("option", { value: s, selected: s === state }, s || "any state")),
  );
  const tbody = h("tbody");
  const more = h("button", { type: "button", class: "btn", hidden: true, onclick: () => loadMore() }, "Older runs");
  container.append(
    h(
      "section",
      { class: "page" },
      h("div", { class: "page-head" }, h("h1", null, "Pipelines ", dot)),
      h("div", { class: "filters" }, select),
      h("div", { class: "table-wrap" }, h("table", { class: "list runs-table", "aria-label": "Pipeline runs" },
        h("thead", null, h("tr", null, ["State", "Pipeline", "Run", "Steps", "Created", "Reason"].map((c) => h("th", { scope: "col" }, c)))),
        tbody)),
      h("div", { class: "pager" }, more),
    ),
  );

  function row(run) {
    const href = `#/pipelines/${encodeURIComponent(run.id)}`;
    return h(
      "tr",
      { dataset: { id: run.id, state: run.state } },
      h("td", null, badge(run.state)),
      h("td", null, h("a", { href, class: "row-link" }, visible(run.name))),
      h("td", { class: "mono" }, h("a", { href, tabindex: "-1" }, visible(run.id))),
      h("td", null, progress(run.counts)),
      h("td", { title: when(run.created_at) }, ago(run.created_at)),
      h("td", { class: "c-reason" }, visible(run.reason || "")),
    );
  }

  function render() {
    replace(tbody, items.map(row));
    if (!items.length) tbody.appendChild(h("tr", { class: "empty" }, h("td", { colspan: "6" }, "No pipeline runs. Start one: hodei pipeline run ci.yaml")));
    more.hidden = !next;
  }

  async function load() {
    try {
      const page = await api.get(`/api/v1/pipelines${api.query({ state, limit: PAGE })}`);
      if (gone) return;
      items = page.items || [];
      next = page.next;
      render();
    } catch (err) {
      replace(tbody, h("tr", null, h("td", { colspan: "6" }, errorNote(err))));
    }
  }

  async function loadMore() {
    try {
      const page = await api.get(`/api/v1/pipelines${api.query({ state, limit: PAGE, cursor: next })}`);
      items.push(...(page.items || []));
      next = page.next;
      render();
    } catch (err) {
      ctx.toast(`loading older runs failed: ${err.message}`, "error");
    }
  }

  const reload = debounce(load, 400);
  const close = api.events(
    "/api/v1/jobs/events",
    {
      ready: () => reload(),
      job: (job) => job && runOfJob(job.id) && reload(),
      resync: () => reload(),
    },
    (s) => dot.set(s),
  );
  load();
  return () => {
    gone = true;
    reload.cancel();
    close();
  };
}
