// A job: its details, attempts (each with its outcome and log), cancel and retry (not for a
// viewer), its artifacts, and the log viewer, live while the job runs.

import * as api from "../api.js";
import { h, replace } from "../dom.js";
import { bytes, jobSeconds, pairs, runOfJob, seconds, TERMINAL_STATES, visible, visibleLines, when } from "../format.js";
import { LogViewer } from "../logview.js";
import { actionButton, badge, details, errorNote, streamDot } from "./common.js";

export function mount(container, route, ctx) {
  const id = route.id;
  document.title = `${id} · Hodei`;
  const requested = Number(route.params.get("attempt")) || null;
  const startLine = Number(route.params.get("line")) || null;
  let job = null;
  let viewer = null;
  let viewing = null; // attempt shown (null: the current one)
  let closeEvents = null;
  let gone = false;
  let durationEl = null;

  const head = h("div", { class: "page-head" });
  const actions = h("div", { class: "actions" });
  const info = h("div", { class: "job-info" });
  const attemptsEl = h("div", { class: "attempts" });
  const artifactsEl = h("div", { class: "artifacts" });
  const logHead = h("h2", { id: "log-title" }, "Log");
  const logBox = h("div", { class: "log-box" });
  const dot = streamDot();
  container.append(
    h(
      "section",
      { class: "page job-page", dataset: { job: id } },
      h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/jobs" }, "Jobs"), " / ", h("span", { class: "mono" }, visible(id))),
      head,
      actions,
      h("div", { class: "columns" }, info, h("div", null, h("h2", null, "Attempts"), attemptsEl, h("h2", null, "Artifacts"), artifactsEl)),
      h("section", { class: "log-section", "aria-labelledby": "log-title" }, logHead, logBox),
    ),
  );

  function renderHead() {
    const run = runOfJob(job.id);
    replace(
      head,
      h("h1", null, badge(job.state), " ", h("span", { class: "job-name" }, visible(job.name) || visible(job.id)), " ", dot),
      run ? h("p", { class: "muted" }, "Step of pipeline run ", h("a", { href: `#/pipelines/${encodeURIComponent(run)}` }, visible(run))) : null,
    );
    const buttons = [];
    if (ctx.can("submitter")) {
      if (!TERMINAL_STATES.has(job.state)) {
        buttons.push(
          actionButton(ctx, "Cancel", async () => update(await api.post(`${api.jobPath(id)}/cancel`)), {
            danger: true,
            data: { action: "cancel" },
            done: "Cancel requested",
          }),
        );
      } else if (!runOfJob(job.id)) {
        buttons.push(
          actionButton(ctx, "Retry", async () => {
            update(await api.post(`${api.jobPath(id)}/retry`));
            openLog(null);
          }, { data: { action: "retry" }, done: "Queued again" }),
        );
      }
    }
    replace(actions, buttons);
  }

  function renderInfo() {
    const secs = jobSeconds(job);
    // A script keeps its lines; arguments are one line each.
    const command = [visibleLines(job.command), ...(job.arguments || []).map(visible)].join(" ");
    durationEl = secs === null ? null : h("span", null, seconds(secs));
    replace(
      info,
      details([
        ["Job", h("span", { class: "mono" }, visible(job.id))],
        ["State", badge(job.state)],
        ["Exit code", job.exit_code === null || job.exit_code === undefined ? "" : String(job.exit_code)],
        ["Reason", job.reason],
        ["Retry at", job.retry_at ? when(job.retry_at) : ""],
        ["Worker", job.worker_id],
        ["Image", job.image ? h("span", { class: "mono" }, visible(job.image)) : "the worker image"],
        ["Command", h("code", { class: "command" }, command)],
        ["Labels", pairs(job.labels)],
        ["Priority", String(job.priority ?? 0)],
        ["Resources", `${job.cpu ? job.cpu + " CPU" : "any CPU"}, ${job.memory_bytes ? bytes(job.memory_bytes) : "any memory"}${job.timeout_s ? `, timeout ${seconds(job.timeout_s)}` : ""}`],
        ["Retries", `${job.retries_used || 0} of ${job.max_retries || 0} used; platform ${job.infra_retries_used || 0}${job.no_infra_retry ? " (never run again by itself)" : ""}`],
        ["Secrets", (job.secrets || []).map(visible).join(", ")],
        ["Queued by", job.queued_by],
        ["Created", when(job.created_at)],
        ["Started", job.started_at ? when(job.started_at) : ""],
        ["Finished", job.finished_at ? when(job.finished_at) : ""],
        ["Duration", durationEl],
      ]),
    );
  }

  function renderAttempts(items) {
    if (!items.length) {
      replace(attemptsEl, h("p", { class: "note muted" }, job.state === "queued" ? "Not started yet." : "None."));
      return;
    }
    const rows = items
      .slice()
      .reverse()
      .map((a) => {
        const start = a.started_at || a.assigned_at;
        const secs = start && a.finished_at ? (Date.parse(a.finished_at) - Date.parse(start)) / 1000 : null;
        const shown = (viewing ?? job.attempts) === a.number;
        return h(
          "tr",
          { dataset: { attempt: String(a.number) }, class: shown ? "selected" : "" },
          h("td", null, `#${a.number}`),
          h("td", null, badge(a.state), a.failure && a.failure !== "job" ? h("span", { class: "muted small" }, ` ${visible(a.failure.replace("_", " "))}`) : null),
          h("td", null, a.exit_code === null || a.exit_code === undefined ? "-" : String(a.exit_code)),
          h("td", { class: "mono" }, visible(a.worker_id || "-")),
          h("td", null, secs !== null ? seconds(secs) : a.finished_at ? "-" : "…"),
          h("td", { class: "c-reason" }, visible(a.reason || "")),
          h("td", null, h("button", { type: "button", class: "btn small", "aria-pressed": String(shown), onclick: () => openLog(a.number === job.attempts ? null : a.number, a.number) }, "Log")),
        );
      });
    replace(
      attemptsEl,
      h("div", { class: "table-wrap" }, h("table", { class: "list attempts-table", "aria-label": "Attempts" },
        h("thead", null, h("tr", null, ["#", "Outcome", "Exit", "Worker", "Time", "Reason", ""].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", null, rows))),
    );
  }

  async function renderArtifacts() {
    try {
      const a = await api.get(`${api.jobPath(id)}/artifacts`);
      const href = `${api.jobPath(id)}/artifacts/archive${api.query({ attempt: a.attempt })}`;
      replace(
        artifactsEl,
        h("p", null, h("a", { href, class: "btn small", download: `${id}-${a.attempt}.tar` }, "Download archive"), ` ${bytes(a.size)}, attempt ${a.attempt}, `, h("span", { class: "mono small", title: "sha256" }, visible(String(a.sha256 || "").slice(0, 16)) + "…")),
      );
    } catch (err) {
      replace(artifactsEl, h("p", { class: "note muted" }, err.status === 404 ? "None." : `Could not load: ${visible(err.message)}`));
    }
  }

  function update(next) {
    if (!next || next.id !== id) return;
    const before = job;
    job = { ...job, ...next };
    renderHead();
    renderInfo();
    const changed = !before || before.state !== job.state || before.attempts !== job.attempts;
    if (changed) refreshAttempts();
    if (before && TERMINAL_STATES.has(job.state) && !TERMINAL_STATES.has(before.state)) renderArtifacts();
    // A new attempt started while the current one was shown: show the new one.
    if (before && viewing === null && viewer && job.attempts > before.attempts && before.attempts > 0) openLog(null);
  }

  async function refreshAttempts() {
    try {
      const list = await api.get(`${api.jobPath(id)}/attempts`);
      if (!gone) renderAttempts(list.items || []);
    } catch {
      // the next change tries again
    }
  }

  function openLog(attempt, number = null, line = null) {
    if (viewer) viewer.destroy();
    viewing = attempt;
    const live = attempt === null && !TERMINAL_STATES.has(job.state);
    const n = number ?? (attempt || job.attempts || 1);
    logHead.textContent = `Log of attempt ${n}${live ? " (live)" : ""}`;
    viewer = new LogViewer({
      jobId: id,
      attempt,
      live,
      line,
      onEnd: () => reload(),
    });
    replace(logBox, viewer.el);
    viewer.open();
    for (const row of attemptsEl.querySelectorAll("tr[data-attempt]")) {
      const on = Number(row.dataset.attempt) === n;
      row.classList.toggle("selected", on);
      const b = row.querySelector("button");
      if (b) b.setAttribute("aria-pressed", String(on));
    }
  }

  async function reload() {
    try {
      const fresh = await api.get(api.jobPath(id));
      if (gone) return;
      update(fresh);
      renderAttempts(fresh.attempt_history || []);
    } catch {
      // shown on the next event
    }
  }

  async function start() {
    try {
      job = await api.get(api.jobPath(id));
    } catch (err) {
      replace(head, h("h1", null, "Job ", h("span", { class: "mono" }, visible(id))), errorNote(err));
      return;
    }
    if (gone) return;
    document.title = `${visible(job.name || id)} · Hodei`;
    renderHead();
    renderInfo();
    renderAttempts(job.attempt_history || []);
    renderArtifacts();
    const attempt = requested && requested !== job.attempts ? requested : null;
    openLog(attempt, attempt || null, startLine);
    // This job's changes, from the job events (filtered as narrowly as the API allows).
    const run = runOfJob(id);
    const q = api.query(run ? { pipeline: run } : job.name ? { name: job.name } : {});
    closeEvents = api.events(
      `/api/v1/jobs/events${q}`,
      {
        ready: () => reload(), // listening now (again, after a reconnect): read the job once
        job: (data) => data && data.id === id && update(data),
        resync: () => reload(),
      },
      (state) => dot.set(state),
    );
  }

  // Running time, counted here between events.
  const tick = setInterval(() => {
    if (job && job.state === "running" && durationEl) {
      const secs = jobSeconds(job);
      if (secs !== null) durationEl.textContent = seconds(secs);
    }
  }, 1000);

  start();
  return () => {
    gone = true;
    clearInterval(tick);
    if (viewer) viewer.destroy();
    if (closeEvents) closeEvents();
  };
}
