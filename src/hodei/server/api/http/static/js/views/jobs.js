// The jobs list: filters (state, name, label, pipeline run), newest first, paged by cursor,
// kept up to date by the server's job events (SSE): no polling.

import * as api from "../api.js";
import { debounce, h, replace } from "../dom.js";
import { ago, jobSeconds, seconds, TERMINAL_STATES, visible, when } from "../format.js";
import { badge, errorNote, streamDot } from "./common.js";

const STATES = ["", "queued", "assigned", "running", "succeeded", "failed", "cancelled", "timed_out"];
const PAGE = 50;

function filtersFrom(params) {
  return {
    state: params.get("state") || "",
    name: params.get("name") || "",
    label: params.getAll("label").join(", "),
    pipeline: params.get("pipeline") || "",
  };
}

function queryOf(f, extra = {}) {
  const labels = f.label
    .split(/[,\s]+/)
    .map((l) => l.trim())
    .filter(Boolean);
  return api.query({ state: f.state, name: f.name.trim(), label: labels, pipeline: f.pipeline.trim(), ...extra });
}

function newer(a, b) {
  const ta = a.created_at || "";
  const tb = b.created_at || "";
  if (ta !== tb) return ta > tb;
  return String(a.id) > String(b.id);
}

export function mount(container, route, ctx) {
  document.title = "Jobs · Hodei";
  const f = filtersFrom(route.params);
  let jobs = []; // newest first
  const byId = new Map();
  let next = null;
  let closeEvents = null;
  let generation = 0;

  const dot = streamDot();
  const stateSelect = h(
    "select",
    { id: "f-state", name: "state", "aria-label": "State" },
    STATES.map((s) => h("option", { value: s, selected: s === f.state }, s ? s.replace("_", " ") : "any state")),
  );
  const nameInput = h("input", { id: "f-name", name: "name", type: "search", placeholder: "name", value: f.name, "aria-label": "Name" });
  const labelInput = h("input", { id: "f-label", name: "label", type: "search", placeholder: "label k=v", value: f.label, "aria-label": "Label (key=value)" });
  const pipelineInput = h("input", { id: "f-pipeline", name: "pipeline", type: "search", placeholder: "pipeline run", value: f.pipeline, "aria-label": "Pipeline run" });
  const apply = () => {
    f.state = stateSelect.value;
    f.name = nameInput.value;
    f.label = labelInput.value;
    f.pipeline = pipelineInput.value;
    const q = queryOf(f);
    history.replaceState(null, "", `#/jobs${q}`);
    load();
  };
  const applySoon = debounce(apply, 300);
  stateSelect.addEventListener("change", apply);
  for (const input of [nameInput, labelInput, pipelineInput]) {
    input.addEventListener("input", applySoon);
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        applySoon.cancel();
        apply();
      }
    });
  }

  const tbody = h("tbody");
  const table = h(
    "table",
    { class: "list jobs-table", "aria-label": "Jobs" },
    h("thead", null, h("tr", null, ["State", "Name", "Job", "Duration", "Worker", "Reason", "Created"].map((c) => h("th", { scope: "col", class: `c-${c.toLowerCase()}` }, c)))),
    tbody,
  );
  const status = h("div", { class: "list-status", "aria-live": "polite" });
  const more = h("button", { type: "button", class: "btn", hidden: true, onclick: () => loadMore() }, "Older jobs");
  table.addEventListener("keydown", (e) => {
    if (e.key !== "j" && e.key !== "k" && e.key !== "ArrowDown" && e.key !== "ArrowUp") return;
    const links = [...tbody.querySelectorAll("a.row-link")];
    const i = links.indexOf(document.activeElement);
    if (i < 0) return;
    e.preventDefault();
    const j = e.key === "j" || e.key === "ArrowDown" ? Math.min(links.length - 1, i + 1) : Math.max(0, i - 1);
    links[j].focus();
  });

  const onKey = (e) => {
    if (e.key === "/" && !(e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement)) {
      e.preventDefault();
      nameInput.focus();
    }
  };
  document.addEventListener("keydown", onKey);

  container.append(
    h(
      "section",
      { class: "page" },
      h("div", { class: "page-head" }, h("h1", null, "Jobs ", dot)),
      h("form", { class: "filters", role: "search", onsubmit: (e) => { e.preventDefault(); apply(); } },
        stateSelect, nameInput, labelInput, pipelineInput,
        h("button", { type: "button", class: "btn small ghost", onclick: () => { stateSelect.value = ""; nameInput.value = ""; labelInput.value = ""; pipelineInput.value = ""; apply(); } }, "Clear")),
      h("div", { class: "table-wrap" }, table),
      status,
      h("div", { class: "pager" }, more),
    ),
  );

  function cells(job) {
    const secs = jobSeconds(job);
    const reason = job.reason || (job.retry_at ? `retry at ${when(job.retry_at)}` : "");
    const href = `#/jobs/${encodeURIComponent(job.id)}`;
    return [
      h("td", { class: "c-state" }, badge(job.state)),
      h("td", { class: "c-name" }, h("a", { href, class: "row-link" }, visible(job.name) || h("span", { class: "muted" }, "(no name)"))),
      h("td", { class: "c-job mono" }, h("a", { href, tabindex: "-1" }, visible(job.id))),
      h("td", { class: "c-duration", dataset: { running: String(job.state === "running") } }, secs === null ? "-" : seconds(secs)),
      h("td", { class: "c-worker mono" }, visible(job.worker_id || "-")),
      h("td", { class: "c-reason", title: visible(reason) }, visible(reason)),
      h("td", { class: "c-created", title: visible(job.created_at || "") }, ago(job.created_at)),
    ];
  }

  function rowOf(job) {
    const tr = h("tr", { dataset: { id: job.id, state: job.state } }, cells(job));
    tr.job = job;
    return tr;
  }

  function render() {
    replace(tbody, jobs.map((j) => byId.get(j.id).row));
    more.hidden = !next;
    status.textContent = jobs.length ? `${jobs.length} job${jobs.length === 1 ? "" : "s"} shown` : "";
    if (!jobs.length) {
      const any = f.state || f.name || f.label || f.pipeline;
      tbody.appendChild(h("tr", { class: "empty" }, h("td", { colspan: "7" }, any ? "No job matches these filters." : "No jobs yet. Submit one: hodei submit -- echo hello")));
    }
  }

  function add(list, append) {
    for (const job of list) {
      if (byId.has(job.id)) continue;
      byId.set(job.id, { job, row: rowOf(job) });
      if (append) jobs.push(job);
    }
  }

  // How far a job has come: an event older than what a list read shows is not applied.
  const RANK = { queued: 0, assigned: 1, running: 2 };
  const progress = (job) => [job.attempts || 0, RANK[job.state] ?? 3];
  const notBehind = (a, b) => a[0] > b[0] || (a[0] === b[0] && a[1] >= b[1]);
  let listing = null; // events heard while a list read is under way

  /** Follow the job events with these filters; each `ready` (also after a reconnect, which
   *  may have missed changes) and each `resync` reads the list again. */
  function load() {
    generation += 1;
    if (closeEvents) closeEvents();
    dot.set("connecting");
    let ready = false;
    closeEvents = api.events(
      `/api/v1/jobs/events${queryOf(f)}`,
      {
        ready: () => {
          ready = true;
          list();
        },
        job: (data) => (listing ? listing.push(data) : upsert(data)),
        resync: () => list(),
      },
      (state) => dot.set(state),
    );
    const mine = generation;
    setTimeout(() => !ready && mine === generation && !listing && list(), 3000); // a server without "ready"
  }

  async function list() {
    const mine = generation;
    const heard = [];
    listing = heard;
    try {
      const page = await api.get(`/api/v1/jobs${queryOf(f, { limit: PAGE })}`);
      if (mine !== generation) return;
      jobs = [];
      byId.clear();
      add(page.items || [], true);
      next = page.next;
      render();
      if (listing === heard) listing = null;
      for (const job of heard) {
        const known = byId.get(job.id);
        if (!known || notBehind(progress(job), progress(known.job))) upsert(job);
      }
    } catch (err) {
      if (listing === heard) listing = null;
      if (mine !== generation) return;
      replace(tbody, h("tr", null, h("td", { colspan: "7" }, errorNote(err))));
    }
  }

  async function loadMore() {
    if (!next) return;
    more.disabled = true;
    try {
      const page = await api.get(`/api/v1/jobs${queryOf(f, { limit: PAGE, cursor: next })}`);
      add(page.items || [], true);
      next = page.next;
      render();
    } catch (err) {
      ctx.toast(`loading older jobs failed: ${err.message}`, "error");
    } finally {
      more.disabled = false;
    }
  }

  function matches(job) {
    return !f.state || job.state === f.state;
  }

  function upsert(job) {
    if (!job || typeof job !== "object" || !job.id) return;
    const known = byId.get(job.id);
    if (known) {
      if (!matches(job)) {
        byId.delete(job.id);
        jobs = jobs.filter((j) => j.id !== job.id);
        known.row.remove();
        render();
        return;
      }
      known.job = job;
      const i = jobs.findIndex((j) => j.id === job.id);
      if (i >= 0) jobs[i] = job;
      const row = rowOf(job);
      known.row.replaceWith(row);
      known.row = row;
      row.classList.add("changed");
      return;
    }
    if (!matches(job)) return;
    const oldest = jobs[jobs.length - 1];
    if (next && oldest && !newer(job, oldest)) return; // on a later page: "Older jobs" shows it
    byId.set(job.id, { job, row: rowOf(job) });
    let i = 0;
    while (i < jobs.length && newer(jobs[i], job)) i++;
    jobs.splice(i, 0, job);
    render();
    byId.get(job.id).row.classList.add("new");
  }

  // The duration of running jobs, counted here between events.
  const tick = setInterval(() => {
    for (const { job, row } of byId.values()) {
      if (job.state !== "running" || TERMINAL_STATES.has(job.state)) continue;
      const cell = row.querySelector(".c-duration");
      const secs = jobSeconds(job);
      if (cell && secs !== null) cell.textContent = seconds(secs);
    }
  }, 1000);

  load();
  return () => {
    generation += 1;
    clearInterval(tick);
    applySoon.cancel();
    document.removeEventListener("keydown", onKey);
    if (closeEvents) closeEvents();
  };
}
