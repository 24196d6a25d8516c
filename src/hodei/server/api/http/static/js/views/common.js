// Pieces the pages share: state badges, action buttons, empty and error notes.

import { h } from "../dom.js";
import { visible } from "../format.js";

const ICONS = {
  queued: "○",
  assigned: "◔",
  running: "◑",
  pending: "○",
  waiting: "‖",
  succeeded: "✓",
  failed: "✕",
  cancelled: "⊘",
  timed_out: "◷",
  skipped: "↷",
  idle: "○",
  busy: "◑",
  draining: "◒",
  provisioning: "◔",
  reconnecting: "◌",
  not_run: "○",
  active: "◷",
  paused: "‖",
  started: "▶",
  starting: "◔",
};

export function badge(state) {
  const s = visible(state || "unknown");
  return h(
    "span",
    { class: `badge st-${s.replace(/[^a-z_]/g, "")}`, dataset: { state: s } },
    h("span", { class: "icon", "aria-hidden": "true" }, ICONS[s] || "•"),
    s.replace("_", " "),
  );
}

/** A button that runs `action` (async), disabled meanwhile; a failure is a toast. */
export function actionButton(ctx, label, action, options = {}) {
  const button = h(
    "button",
    {
      type: "button",
      class: `btn ${options.danger ? "danger" : ""} ${options.small ? "small" : ""}`,
      dataset: options.data || {},
      onclick: async () => {
        if (options.confirm && !window.confirm(options.confirm)) return;
        button.disabled = true;
        try {
          await action();
          if (options.done) ctx.toast(options.done);
        } catch (err) {
          ctx.toast(`${label} failed: ${err.message}`, "error");
        } finally {
          button.disabled = false;
        }
      },
    },
    label,
  );
  return button;
}

export function note(text, kind = "muted") {
  return h("p", { class: `note ${kind}` }, visible(text));
}

export function errorNote(err) {
  const text = err && err.status === 404 ? err.message : `Could not load: ${err && err.message ? err.message : err}`;
  return h("p", { class: "note error", role: "alert" }, visible(text));
}

/** A definition list from [label, value] pairs (values: text or nodes; empty ones left out). */
export function details(rows) {
  const dl = h("dl", { class: "details" });
  for (const [label, value] of rows) {
    if (value === undefined || value === null || value === "") continue;
    dl.append(h("dt", null, label), h("dd", null, value instanceof Node ? value : visible(value)));
  }
  return dl;
}

export function streamDot() {
  const dot = h("span", { class: "live-dot", dataset: { state: "connecting" }, title: "connecting" }, h("span", { class: "sr" }, "connecting"));
  dot.set = (state) => {
    dot.dataset.state = state;
    const text = state === "open" ? "live" : state === "retrying" ? "reconnecting" : state;
    dot.title = text;
    dot.firstChild.textContent = text;
  };
  return dot;
}
