// A pipeline run: its DAG, live from the run's event stream; approve a manual step, retry
// what failed, cancel; a click on a step shows its job's log below the graph.

import * as api from "../api.js";
import { h, replace } from "../dom.js";
import { pairs, seconds, visible, when } from "../format.js";
import { drawDag } from "../dag.js";
import { LogViewer } from "../logview.js";
import { actionButton, badge, details, errorNote, streamDot } from "./common.js";

const ACTIVE = new Set(["running", "waiting"]);

export function mount(container, route, ctx) {
  const id = route.id;
  document.title = `${id} · Hodei`;
  let run = null;
  let selectedStep = route.params.get("step") || null; // a step job's id in the run ("test[os=linux]")
  let selected = null; // its job id
  let viewer = null;
  let viewerJob = null;
  let closeEvents = null;
  let gone = false;

  const dot = streamDot();
  const head = h("div", { class: "page-head" }, h("h1", null, "Run ", h("span", { class: "mono" }, visible(id)), " ", dot));
  const actions = h("div", { class: "actions" });
  const graph = h("div", { class: "dag-wrap", tabindex: "-1" });
  const info = h("div", { class: "run-info" });
  const stepsEl = h("div", { class: "table-wrap" });
  const logHead = h("h2", { id: "step-log-title" }, "Step log");
  const logBox = h("div", { class: "log-box" }, h("p", { class: "note muted" }, "Select a step in the graph to see its log."));
  container.append(
    h(
      "section",
      { class: "page run-page", dataset: { run: id } },
      h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/pipelines" }, "Pipelines"), " / ", h("span", { class: "mono" }, visible(id))),
      head,
      actions,
      info,
      graph,
      h("details", { class: "steps-details" }, h("summary", null, "Steps as a table"), stepsEl),
      h("section", { class: "log-section", "aria-labelledby": "step-log-title" }, logHead, logBox),
    ),
  );

  function select(row) {
    if (!row.job_id) return;
    selected = row.job_id;
    selectedStep = row.id;
    history.replaceState(null, "", `#/pipelines/${encodeURIComponent(id)}${api.query({ step: selectedStep })}`);
    render();
    showLog(row);
  }

  function showLog(row) {
    if (viewer && viewerJob === row.job_id) return;
    if (viewer) viewer.destroy();
    viewerJob = row.job_id;
    const live = row.status === "running" || row.status === "pending";
    logHead.replaceChildren(`Log of ${visible(row.id)} `, h("a", { href: `#/jobs/${encodeURIComponent(row.job_id)}`, class: "small" }, "open the job"));
    viewer = new LogViewer({ jobId: row.job_id, attempt: null, live, onEnd: () => {} });
    replace(logBox, viewer.el);
    viewer.open();
  }

  function renderActions() {
    const buttons = [];
    if (ctx.can("submitter")) {
      for (const step of run.awaiting_approval || []) {
        buttons.push(
          actionButton(ctx, `Approve ${visible(step)}`, async () => apply(await api.post(`${api.runPath(id)}/approve`, { step })), {
            data: { action: "approve", step },
            done: `${visible(step)} approved`,
          }),
        );
      }
      if (!ACTIVE.has(run.state) && run.state !== "succeeded") {
        buttons.push(
          actionButton(ctx, "Retry failed steps", async () => {
            apply(await api.post(`${api.runPath(id)}/retry`));
            follow();
          }, { data: { action: "retry" }, done: "The failed steps run again" }),
        );
      }
      if (ACTIVE.has(run.state)) {
        buttons.push(
          actionButton(ctx, "Cancel run", async () => apply(await api.post(`${api.runPath(id)}/cancel`)), {
            danger: true,
            data: { action: "cancel" },
            confirm: "Cancel this run? Running steps are cancelled, nothing more starts.",
          }),
        );
      }
    }
    replace(actions, buttons);
  }

  function renderSteps() {
    const rows = (run.steps || []).map((row) =>
      h(
        "tr",
        { dataset: { step: row.step, status: row.status } },
        h("td", null, visible(row.id)),
        h("td", null, badge(row.status)),
        h("td", null, (row.needs || []).map(visible).join(", ")),
        h("td", null, row.duration_s === null || row.duration_s === undefined ? "-" : seconds(row.duration_s)),
        h("td", { class: "mono" }, row.job_id ? h("a", { href: `#/jobs/${encodeURIComponent(row.job_id)}` }, visible(row.job_id)) : "-"),
        h("td", { class: "c-reason" }, visible(row.reason || "")),
      ),
    );
    replace(
      stepsEl,
      h("table", { class: "list", "aria-label": "Steps" },
        h("thead", null, h("tr", null, ["Step", "Status", "Needs", "Time", "Job", "Reason"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", null, rows)),
    );
  }

  function render() {
    replace(
      head,
      h("h1", null, badge(run.state), " ", visible(run.name), " ", h("span", { class: "mono muted small" }, visible(run.id)), " ", dot),
    );
    replace(
      info,
      details([
        ["Reason", run.reason],
        ["Params", pairs(run.params)],
        ["File", run.filename],
        ["Queued by", run.queued_by],
        ["Created", when(run.created_at)],
        ["Finished", run.finished_at ? when(run.finished_at) : ""],
        ["Awaiting approval", (run.awaiting_approval || []).map(visible).join(", ")],
      ]),
    );
    const focused = document.activeElement && graph.contains(document.activeElement) ? document.activeElement.dataset.job : null;
    replace(graph, drawDag(run, selected, select));
    if (focused) {
      const again = [...graph.querySelectorAll("[data-job]")].find((el) => el.dataset.job === focused);
      if (again) again.focus();
    }
    renderActions();
    renderSteps();
  }

  function apply(view) {
    if (!view || view.id !== id) return;
    run = view;
    document.title = `${visible(run.name)} ${id} · Hodei`;
    // The selected step's job: a retry gives the step a new one, whose log is then shown.
    const row = selectedStep ? (run.steps || []).find((r) => r.id === selectedStep) : null;
    selected = row ? row.job_id : null;
    render();
    if (row && row.job_id && row.job_id !== viewerJob) showLog(row);
  }

  function follow() {
    if (closeEvents) closeEvents();
    closeEvents = api.events(
      `${api.runPath(id)}/events`,
      {
        run: (view) => apply(view),
        end: (view) => {
          apply(view);
          if (closeEvents) closeEvents();
          closeEvents = null;
          dot.set("ended");
        },
      },
      (state) => dot.set(state),
    );
  }

  async function start() {
    try {
      apply(await api.get(api.runPath(id)));
    } catch (err) {
      replace(graph, errorNote(err));
      return;
    }
    if (gone) return;
    if (ACTIVE.has(run.state)) follow();
    else dot.set("ended");
  }

  start();
  return () => {
    gone = true;
    if (viewer) viewer.destroy();
    if (closeEvents) closeEvents();
  };
}
