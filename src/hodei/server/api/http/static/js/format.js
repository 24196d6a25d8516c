// How values are shown: control characters made visible, times, durations and sizes.

// C0 controls but tab, DEL, C1 controls, and the bidirectional overrides and isolates
// (which would reorder the text around them on screen); LINE_CONTROLS keeps newlines too.
const CONTROLS = /[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/g;
const LINE_CONTROLS = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/g;

export function escapeChar(ch) {
  const code = ch.codePointAt(0);
  if (code < 0x80) return "\\x" + code.toString(16).padStart(2, "0");
  return "\\u" + code.toString(16).padStart(4, "0");
}

/** A value from the server as one line of inert text: every control shown as `\xNN`. */
export function visible(value) {
  if (value === null || value === undefined) return "";
  return String(value).replace(CONTROLS, escapeChar);
}

/** The same, but newlines stay (a script shown as the lines it has). */
export function visibleLines(value) {
  if (value === null || value === undefined) return "";
  return String(value).replace(LINE_CONTROLS, escapeChar);
}

export function parseTime(iso) {
  if (!iso) return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t;
}

function pad(n) {
  return String(n).padStart(2, "0");
}

/** Local date and time, "2024-05-01 13:04:05"; "-" for none. */
export function when(iso) {
  const t = parseTime(iso);
  if (t === null) return "-";
  const d = new Date(t);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function ago(iso, now = Date.now()) {
  const t = parseTime(iso);
  if (t === null) return "-";
  const s = Math.max(0, (now - t) / 1000);
  if (s < 60) return `${Math.floor(s)}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

/** Seconds as "0.4s", "12s", "3m 04s", "2h 05m". */
export function seconds(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "-";
  const s = Math.max(0, value);
  if (s < 10) return `${s.toFixed(1)}s`;
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(Math.floor(s % 60))}s`;
  return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
}

/** How long a job ran (or has been running): null before it started. */
export function jobSeconds(job, now = Date.now()) {
  const start = parseTime(job.started_at);
  if (start === null) return null;
  const end = parseTime(job.finished_at) ?? now;
  return (end - start) / 1000;
}

export function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = Number(n);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export function pairs(mapping) {
  if (!mapping) return "";
  return Object.entries(mapping)
    .map(([k, v]) => `${visible(k)}=${visible(v)}`)
    .join(", ");
}

export const TERMINAL_STATES = new Set(["succeeded", "failed", "cancelled", "timed_out"]);

/** The pipeline run that a step job id names (RUN.INDEX.GENERATION), or null. */
export function runOfJob(jobId) {
  const m = /^(r[0-9a-f]{17})\.\d{1,6}\.\d{1,6}$/.exec(jobId || "");
  return m ? m[1] : null;
}
