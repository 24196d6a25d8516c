// The log viewer: a virtualised view of one attempt's log, however large.
//
// Only the lines in the viewport (and a few around it) are in the DOM. The server's line index
// (`.../logs/index`: checkpoints [byte offset, line number] about every 64 KiB, each at the
// start of a line) says how many lines there are, which sizes the scrollbar, and where each
// line's bytes are, so the lines around the viewport are fetched by byte range (`Range:
// bytes=A-B`), one chunk (from a checkpoint to the next) at a time, and kept in a small cache.
// A running job's new bytes arrive over the log's SSE stream (base64, exact bytes) and are
// appended to the last chunk; "follow" keeps the view at the end.
//
// A log taller than the browser can scroll (millions of lines) is mapped onto a scrollbar of
// at most MAX_PX pixels: the first visible line is the state, the scroll position follows it.

import * as api from "./api.js";
import { decode, plainText, render, splitLines } from "./ansi.js";
import { debounce, h } from "./dom.js";
import { bytes as fmtBytes } from "./format.js";

const MAX_PX = 8_000_000;
const CACHE_CHUNKS = 96; // about 6 MiB of log text
const MAX_INFLIGHT = 4;
const BIG_CHUNK = 1 << 20; // a chunk longer than this holds a very long line: its middle is left out
const EDGE = 256 << 10;
const SEARCH_RANGE = 1 << 20;
const MAX_RESULTS = 1000;
const SEAL = 64 << 10; // live data: a new checkpoint about every 64 KiB
const NL = 10;

function concat(a, b) {
  if (!a.length) return b;
  if (!b.length) return a;
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

function b64bytes(text) {
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Lines of a chunk's bytes: the last line's newline ends it (no empty line after it). */
function linesOf(data) {
  if (!data.length) return [];
  const lines = splitLines(decode(data));
  if (data[data.length - 1] === NL) lines.pop();
  return lines;
}

/** Checkpoints [[offset, line], ...] every ~64 KiB of `data`, at line starts (0-based lines). */
export function indexBytes(data, block = 65536) {
  const starts = [[0, 0]];
  let line = 0;
  let next = block;
  for (let i = 0; i < data.length; i++) {
    if (data[i] !== NL) continue;
    line += 1;
    if (i + 1 >= next && i + 1 < data.length) {
      starts.push([i + 1, line]);
      next = (Math.floor((i + 1) / block) + 1) * block;
    }
  }
  const lines = line + (data.length && data[data.length - 1] !== NL ? 1 : 0);
  return { size: data.length, lines, block, starts };
}

/** Where the bytes come from: Range requests, or (without the index route) one whole read. */
class RemoteSource {
  constructor(path, attemptQuery) {
    this.path = path;
    this.q = attemptQuery;
    this.local = null;
  }

  logsUrl() {
    return `${this.path}/logs${this.q}`;
  }

  async index() {
    const r = await api.request("GET", `${this.path}/logs/index${this.q}`);
    if (r.ok) return r.json();
    let body = null;
    try {
      body = await r.json();
    } catch {
      body = null;
    }
    if (r.status === 404 && !(body && body.error)) {
      // A server without the index route: read the log once and index it here.
      const whole = await api.request("GET", this.logsUrl(), { headers: { Accept: "application/octet-stream" } });
      if (!whole.ok) throw new api.ApiError(whole.status, "log", `the log cannot be read (${whole.status})`);
      this.local = new Uint8Array(await whole.arrayBuffer());
      return indexBytes(this.local);
    }
    const message = body && body.error ? body.error.message : `${r.status} ${r.statusText}`;
    throw new api.ApiError(r.status, body && body.error ? body.error.code : "log", message);
  }

  /** Bytes [a, b). */
  async range(a, b, signal) {
    if (b <= a) return new Uint8Array(0);
    if (this.local) return this.local.subarray(a, Math.min(b, this.local.length));
    const r = await api.request("GET", this.logsUrl(), {
      headers: { Range: `bytes=${a}-${b - 1}`, Accept: "application/octet-stream" },
      signal,
    });
    if (r.status === 206) return new Uint8Array(await r.arrayBuffer());
    if (r.status === 200) return new Uint8Array(await r.arrayBuffer()).subarray(a, b); // Range ignored
    if (r.status === 416) return new Uint8Array(0);
    throw new api.ApiError(r.status, "log", `reading the log failed (${r.status})`);
  }
}

export class LogViewer {
  /**
   * @param {object} o
   * @param {string} o.jobId
   * @param {number|null} o.attempt  null: the job's current attempt
   * @param {boolean} o.live  follow new output over SSE (a job that has not ended)
   * @param {number} [o.line]  1-based line to open at
   * @param {(end: object) => void} [o.onEnd]  the attempt's end event
   */
  constructor(o) {
    this.jobId = o.jobId;
    this.attempt = o.attempt ?? null;
    this.live = Boolean(o.live);
    this.onEnd = o.onEnd || (() => {});
    this.startLine = o.line ? Math.max(0, o.line - 1) : null;
    const q = this.attempt ? api.query({ attempt: this.attempt }) : "";
    this.source = new RemoteSource(api.jobPath(this.jobId), q);
    this.cps = [[0, 0]];
    this.size = 0;
    this.lineCount = 0;
    this.chunks = new Map(); // chunk index -> lines (string[])
    this.loading = new Map(); // chunk index -> promise
    this.queue = [];
    this.inflight = 0;
    this.topLine = 0;
    this.rowPx = 18;
    this.follow = this.live;
    this.tailPartial = new Uint8Array(0); // live: bytes of the unfinished last line
    this.openChunk = -1; // live: the chunk new lines go to
    this.query = "";
    this.results = null; // whole-log search: [{line, start, end, text}]
    this.current = -1;
    this.target = -1; // line jumped to (highlighted)
    this.rows = [];
    this.frame = 0;
    this.destroyed = false;
    this.closeStream = null;
    this.searchAbort = null;
    this.ended = !this.live;
    this.failed = new Map(); // chunk index -> when its read failed (not asked again for a while)
    this.statusTimer = 0;
    this.build();
  }

  // -------------------------------------------------------------------------------------------
  // DOM

  build() {
    this.status = h("span", { class: "log-status", "aria-live": "polite" }, "opening…");
    this.searchInput = h("input", {
      type: "search",
      class: "log-search",
      placeholder: "Search the log",
      "aria-label": "Search the log",
      onkeydown: (e) => {
        if (e.key === "Enter") {
          e.preventDefault();
          this.step(e.shiftKey ? -1 : 1);
        } else if (e.key === "Escape") {
          this.searchInput.value = "";
          this.setQuery("");
        }
      },
      oninput: debounce(() => this.setQuery(this.searchInput.value), 150),
    });
    this.matchInfo = h("span", { class: "log-matches" });
    this.gotoInput = h("input", {
      type: "number",
      min: "1",
      class: "log-goto",
      placeholder: "line",
      "aria-label": "Line number",
      onkeydown: (e) => {
        if (e.key === "Enter") {
          e.preventDefault();
          this.gotoFromInput();
        }
      },
    });
    this.followButton = h(
      "button",
      { type: "button", class: "btn small toggle", "aria-pressed": String(this.follow), onclick: () => this.setFollow(!this.follow) },
      "Follow",
    );
    this.wholeButton = h(
      "button",
      { type: "button", class: "btn small", onclick: () => (this.searchAbort ? this.stopSearch() : this.searchWhole()) },
      "Search whole log",
    );
    const download = h(
      "a",
      { class: "btn small", href: this.source.logsUrl(), download: `${this.jobId}${this.attempt ? "-" + this.attempt : ""}.log` },
      "Download",
    );
    const toolbar = h(
      "div",
      { class: "log-toolbar", role: "toolbar", "aria-label": "Log tools" },
      h("div", { class: "group" }, this.searchInput,
        h("button", { type: "button", class: "btn small", "aria-label": "Previous match", title: "Previous match (Shift+Enter)", onclick: () => this.step(-1) }, "↑"),
        h("button", { type: "button", class: "btn small", "aria-label": "Next match", title: "Next match (Enter)", onclick: () => this.step(1) }, "↓"),
        this.wholeButton, this.matchInfo),
      h("div", { class: "group" }, this.gotoInput,
        h("button", { type: "button", class: "btn small", onclick: () => this.gotoFromInput() }, "Go to line"),
        this.followButton, download),
    );
    this.resultsEl = h("ol", { class: "log-results", hidden: true, "aria-label": "Matches in the whole log" });
    this.spacer = h("div", { class: "log-spacer" });
    this.linesEl = h("div", { class: "log-lines" });
    this.scroller = h("div", {
      class: "log-scroller",
      tabindex: "0",
      role: "region",
      "aria-label": "Log output",
      onscroll: () => this.onScroll(),
      onkeydown: (e) => this.onKey(e),
    });
    this.scroller.addEventListener("wheel", (e) => this.onWheel(e), { passive: false });
    this.scroller.append(this.spacer, this.linesEl);
    this.el = h("section", { class: "log-viewer", dataset: { job: this.jobId } }, toolbar, this.resultsEl, this.scroller, this.status);
    this.resize = new ResizeObserver(() => this.layout());
  }

  async open() {
    this.resize.observe(this.scroller);
    this.measure();
    const started = performance.now();
    let index;
    try {
      index = await this.source.index();
    } catch (err) {
      this.setStatus(`the log cannot be shown: ${err.message}`);
      this.el.dataset.state = "error";
      return;
    }
    if (this.destroyed) return;
    this.applyIndex(index);
    if (this.live) {
      const last = this.cps.length - 1;
      let data;
      try {
        data = await this.fetchRaw(last);
      } catch (err) {
        this.setStatus(`the log cannot be shown: ${err.message}`);
        this.el.dataset.state = "error";
        return;
      }
      if (this.destroyed) return;
      this.setOpenChunk(last, data);
    }
    this.layout();
    if (this.startLine !== null) this.gotoLine(this.startLine);
    else if (this.follow) this.toBottom();
    else this.setTop(0);
    this.el.dataset.state = "ready";
    this.openedMs = performance.now() - started;
    if (this.live) this.startStream();
    this.updateStatus();
  }

  destroy() {
    this.destroyed = true;
    if (this.closeStream) this.closeStream();
    if (this.searchAbort) this.searchAbort.abort();
    clearTimeout(this.statusTimer);
    this.resize.disconnect();
    cancelAnimationFrame(this.frame);
  }

  measure() {
    const probe = h("div", { class: "log-row" }, h("span", { class: "lt" }, "M"));
    this.linesEl.appendChild(probe);
    const px = probe.getBoundingClientRect().height;
    probe.remove();
    if (px > 0) this.rowPx = px;
  }

  applyIndex(index) {
    this.size = Number(index.size) || 0;
    let starts = Array.isArray(index.starts) ? index.starts.map((p) => [Number(p[0]), Number(p[1])]) : [];
    // Checkpoints at the end of the log hold no bytes (the line after the last, not begun):
    // the last chunk keeps the log's end, an unfinished last line included.
    starts = starts.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]) && p[0] >= 0 && p[0] < this.size);
    starts.sort((a, b) => a[0] - b[0]);
    const base = starts.length && starts[0][0] === 0 ? starts[0][1] : 0; // 0- or 1-based lines
    const cps = [[0, 0]];
    for (const [off, line] of starts) {
      const last = cps[cps.length - 1];
      if (off > last[0] && line - base > last[1]) cps.push([off, line - base]);
    }
    this.cps = cps;
    this.lineCount = Math.max(Number(index.lines) || 0, cps[cps.length - 1][1] + (this.size > cps[cps.length - 1][0] ? 1 : 0));
    if (this.size === 0) this.lineCount = 0;
  }

  // -------------------------------------------------------------------------------------------
  // Geometry

  /** Whole rows that fit in the viewport. */
  viewRows() {
    return Math.max(1, Math.floor(this.scroller.clientHeight / this.rowPx));
  }

  /** The first line (fractional) when the last line is at the bottom of the viewport. */
  maxTop() {
    return Math.max(0, this.lineCount - this.scroller.clientHeight / this.rowPx);
  }

  scaled() {
    return this.lineCount * this.rowPx > MAX_PX;
  }

  layout() {
    const total = this.lineCount * this.rowPx;
    this.spacer.style.height = `${Math.min(total, MAX_PX)}px`;
    const digits = Math.max(3, String(this.lineCount).length);
    this.el.style.setProperty("--ln-width", `${digits + 1}ch`);
    // As tall as the log, up to the stylesheet's max-height.
    const want = `${Math.max(120, Math.min(this.lineCount * this.rowPx + 24, 4000))}px`;
    if (this.scroller.style.height !== want) this.scroller.style.height = want;
    this.setTop(this.topLine, true);
  }

  scrollFor(line) {
    if (!this.scaled()) return line * this.rowPx;
    const range = Math.min(this.lineCount * this.rowPx, MAX_PX) - this.scroller.clientHeight;
    const max = this.maxTop();
    return max ? (line / max) * range : 0;
  }

  lineFor(scrollTop) {
    if (!this.scaled()) return scrollTop / this.rowPx;
    const range = Math.min(this.lineCount * this.rowPx, MAX_PX) - this.scroller.clientHeight;
    return range > 0 ? (scrollTop / range) * this.maxTop() : 0;
  }

  setTop(line, force = false) {
    const top = Math.max(0, Math.min(this.maxTop(), line));
    this.topLine = top;
    const want = this.scrollFor(top);
    if (force || Math.abs(this.scroller.scrollTop - want) >= 1) this.scroller.scrollTop = want;
    this.schedule();
  }

  toBottom() {
    this.setTop(this.maxTop());
  }

  onScroll() {
    const expected = this.scrollFor(this.topLine);
    const now = this.scroller.scrollTop;
    if (Math.abs(now - expected) < 1) return;
    const line = this.lineFor(now);
    if (line < this.topLine - 0.5 && this.follow) this.setFollow(false); // the reader scrolled up
    this.topLine = Math.max(0, Math.min(this.maxTop(), line));
    if (this.live && !this.follow && this.topLine >= this.maxTop() - 0.5 && now > 0) this.setFollow(true);
    this.schedule();
  }

  onWheel(e) {
    if (!this.scaled() || e.ctrlKey || Math.abs(e.deltaX) > Math.abs(e.deltaY)) return;
    e.preventDefault();
    const unit = e.deltaMode === 1 ? 1 : e.deltaMode === 2 ? this.viewRows() : 1 / this.rowPx;
    const delta = e.deltaY * unit;
    if (delta < 0 && this.follow) this.setFollow(false);
    this.setTop(this.topLine + delta);
  }

  onKey(e) {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    const rows = this.viewRows();
    const moves = { ArrowDown: 1, ArrowUp: -1, PageDown: rows - 1, PageUp: -(rows - 1), " ": rows - 1 };
    if (e.key in moves) {
      e.preventDefault();
      const delta = e.key === " " && e.shiftKey ? -moves[" "] : moves[e.key];
      if (delta < 0 && this.follow) this.setFollow(false);
      this.setTop(this.topLine + delta);
    } else if (e.key === "Home") {
      e.preventDefault();
      this.setFollow(false);
      this.setTop(0);
    } else if (e.key === "End") {
      e.preventDefault();
      if (this.live) this.setFollow(true);
      this.toBottom();
    } else if (e.key === "/") {
      e.preventDefault();
      this.searchInput.focus();
    } else if (e.key === "n" || e.key === "N") {
      e.preventDefault();
      this.step(e.key === "n" ? 1 : -1);
    } else if (e.key === "g") {
      e.preventDefault();
      this.gotoInput.focus();
    }
  }

  setFollow(on) {
    this.follow = Boolean(on) && this.live;
    this.followButton.setAttribute("aria-pressed", String(this.follow));
    if (this.follow) this.toBottom();
  }

  // -------------------------------------------------------------------------------------------
  // Chunks

  chunkOf(line) {
    const cps = this.cps;
    let lo = 0;
    let hi = cps.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (cps[mid][1] <= line) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  chunkSpan(k) {
    const a = this.cps[k][0];
    const b = k + 1 < this.cps.length ? this.cps[k + 1][0] : this.size;
    return [a, b];
  }

  chunkLines(k) {
    return (k + 1 < this.cps.length ? this.cps[k + 1][1] : this.lineCount) - this.cps[k][1];
  }

  async fetchRaw(k, signal) {
    const [a, b] = this.chunkSpan(k);
    return this.source.range(a, b, signal);
  }

  async fetchChunk(k) {
    const [a, b] = this.chunkSpan(k);
    let lines;
    if (b - a > BIG_CHUNK && k !== this.openChunk) {
      const [head, tail] = await Promise.all([this.source.range(a, a + EDGE), this.source.range(b - EDGE, b)]);
      const first = linesOf(head.subarray(0, head.lastIndexOf(NL) + 1));
      const headRest = decode(head.subarray(head.lastIndexOf(NL) + 1));
      const tailStart = tail.indexOf(NL);
      const tailLines = linesOf(tail.subarray(tailStart + 1));
      const middle = `${headRest} … [${fmtBytes(b - a - 2 * EDGE)} of this line not shown: download the log to see it] … ${decode(tail.subarray(0, Math.max(0, tailStart)))}`;
      lines = [...first, middle, ...tailLines];
    } else {
      lines = linesOf(await this.source.range(a, b));
    }
    const want = this.chunkLines(k);
    if (k === this.cps.length - 1 && !this.live && lines.length !== want) {
      // The index's line count of the last chunk is corrected by what was read.
      this.lineCount = this.cps[k][1] + lines.length;
      this.layout();
    } else if (lines.length > want) lines.length = want;
    return lines;
  }

  request(k) {
    if (this.chunks.has(k) || this.loading.has(k) || k < 0 || k >= this.cps.length) return;
    if (this.queue.includes(k)) return;
    const failedAt = this.failed.get(k);
    if (failedAt !== undefined && performance.now() - failedAt < 3000) {
      setTimeout(() => this.schedule(), 3000);
      return;
    }
    this.queue.push(k);
    this.pump();
  }

  wanted(k) {
    const first = this.chunkOf(Math.floor(this.topLine));
    const last = this.chunkOf(Math.floor(this.topLine) + this.viewRows());
    return k >= first - 1 && k <= last + 1;
  }

  pump() {
    while (this.inflight < MAX_INFLIGHT && this.queue.length) {
      const k = this.queue.shift();
      if (this.chunks.has(k) || this.loading.has(k) || !this.wanted(k)) continue;
      this.inflight += 1;
      const p = this.fetchChunk(k)
        .then((lines) => {
          if (this.destroyed) return;
          if (k !== this.openChunk) this.store(k, lines);
        })
        .catch((err) => {
          this.failed.set(k, performance.now());
          if (!this.destroyed) this.setStatus(`reading the log failed: ${err.message}`);
        })
        .finally(() => {
          this.inflight -= 1;
          this.loading.delete(k);
          if (!this.destroyed) {
            this.schedule();
            this.pump();
          }
        });
      this.loading.set(k, p);
    }
  }

  store(k, lines) {
    this.chunks.set(k, lines);
    this.trim();
  }

  /** Forget the chunks used least recently, but those in view and the live one. */
  trim() {
    if (this.chunks.size <= CACHE_CHUNKS) return;
    for (const key of [...this.chunks.keys()]) {
      if (this.chunks.size <= CACHE_CHUNKS) break;
      if (key !== this.openChunk && !this.wanted(key)) this.chunks.delete(key);
    }
  }

  /** The text of a line, or undefined while its chunk is loading. */
  lineText(line) {
    const k = this.chunkOf(line);
    const lines = this.chunks.get(k);
    if (!lines) {
      this.request(k);
      return undefined;
    }
    this.chunks.delete(k); // most recently used last
    this.chunks.set(k, lines);
    const text = lines[line - this.cps[k][1]];
    return text === undefined ? "" : text;
  }

  // -------------------------------------------------------------------------------------------
  // Live tail

  setOpenChunk(k, data) {
    this.openChunk = k;
    const cut = data.lastIndexOf(NL) + 1;
    const lines = linesOf(data.subarray(0, cut));
    this.tailPartial = data.slice(cut);
    if (this.tailPartial.length) lines.push(this.partialText());
    this.chunks.set(k, lines);
    this.lineCount = this.cps[k][1] + lines.length;
  }

  /** The unfinished last line as shown (a very long one: its start only, until it ends). */
  partialText() {
    const p = this.tailPartial;
    if (p.length <= BIG_CHUNK) return decode(p);
    return `${decode(p.subarray(0, EDGE))} … [${fmtBytes(p.length - EDGE)} more of this line so far]`;
  }

  startStream() {
    const q = api.query({ attempt: this.attempt || undefined, offset: this.size, encoding: "base64" });
    this.closeStream = api.events(
      `${api.jobPath(this.jobId)}/logs/stream${q}`,
      {
        log: (data, event) => this.append(String(event.data), Number(event.lastEventId)),
        end: (data) => {
          this.ended = true;
          this.closeStream();
          this.closeStream = null;
          this.updateStatus();
          this.onEnd(data);
        },
      },
      (state) => {
        this.streamState = state;
        this.updateStatus();
      },
    );
  }

  append(b64, endOffset) {
    let data = b64bytes(b64);
    const start = Number.isFinite(endOffset) ? endOffset - data.length : this.size;
    if (start < this.size) data = data.subarray(this.size - start); // already have these bytes
    else if (start > this.size) {
      this.setStatus("the live log skipped ahead: reload the page to read it all");
      return;
    }
    if (!data.length) return;
    const k = this.openChunk;
    const lines = this.chunks.get(k);
    const hadPartial = this.tailPartial.length > 0;
    const combined = concat(this.tailPartial, data);
    const cut = combined.lastIndexOf(NL) + 1;
    if (hadPartial) lines.pop();
    if (cut > 0) {
      for (const line of linesOf(combined.subarray(0, cut))) lines.push(line);
    }
    this.tailPartial = combined.slice(cut);
    this.size += data.length;
    const complete = lines.length;
    if (this.tailPartial.length) lines.push(this.partialText());
    this.lineCount = this.cps[k][1] + lines.length;
    const partialStart = this.size - this.tailPartial.length;
    if (partialStart - this.cps[k][0] >= SEAL && complete > 0) {
      // Seal this chunk at the last line start and open a new one from there.
      const rest = lines.slice(complete);
      lines.length = complete;
      this.cps.push([partialStart, this.cps[k][1] + complete]);
      this.openChunk = this.cps.length - 1;
      this.chunks.set(this.openChunk, rest);
      this.trim();
    }
    const atBottom = this.follow;
    this.layout();
    if (atBottom) this.toBottom();
    this.updateStatusSoon();
  }

  // -------------------------------------------------------------------------------------------
  // Rendering

  schedule() {
    if (this.frame || this.destroyed) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.draw();
    });
  }

  row(i) {
    while (this.rows.length <= i) {
      const ln = h("span", { class: "ln", "aria-hidden": "true" });
      const lt = h("span", { class: "lt" });
      const el = h("div", { class: "log-row" }, ln, lt);
      this.linesEl.appendChild(el);
      this.rows.push({ el, ln, lt, line: -1, text: null, marks: "" });
    }
    return this.rows[i];
  }

  marksOf(line, text) {
    const marks = [];
    if (this.query) {
      const hay = plainText(text).toLowerCase();
      const needle = this.query.toLowerCase();
      let at = hay.indexOf(needle);
      while (at >= 0 && marks.length < 200) {
        marks.push([at, at + needle.length]);
        at = hay.indexOf(needle, at + Math.max(1, needle.length));
      }
    }
    return marks;
  }

  draw() {
    const first = Math.floor(this.topLine);
    const count = Math.ceil(this.scroller.clientHeight / this.rowPx) + 2;
    const offset = Math.max(0, this.scroller.scrollTop - (this.topLine - first) * this.rowPx);
    this.linesEl.style.transform = `translateY(${offset}px)`;
    // The rows' box: a row more than the viewport (the first may be partly above it), never
    // past the end of the scrolled area (it would make that longer).
    const extent = Math.min(this.lineCount * this.rowPx, MAX_PX);
    this.linesEl.style.height = `${Math.max(0, Math.min(this.scroller.clientHeight + this.rowPx, extent - offset))}px`;
    const cur = this.currentResult();
    for (let i = 0; i < count; i++) {
      const r = this.row(i);
      const line = first + i;
      if (line >= this.lineCount) {
        if (!r.el.hidden) r.el.hidden = true;
        r.line = -1;
        continue;
      }
      r.el.hidden = false;
      const text = this.lineText(line);
      const marks = text === undefined ? [] : this.marksOf(line, text);
      const focus = cur && cur.line === line ? marks.findIndex((m) => m[0] === cur.start) : -1;
      const key = `${this.query}|${focus}|${line === this.target}`;
      if (r.line === line && r.text === text && r.marks === key) continue;
      r.line = line;
      r.text = text;
      r.marks = key;
      r.ln.textContent = String(line + 1);
      r.el.dataset.line = String(line + 1);
      r.el.classList.toggle("target", line === this.target);
      r.el.classList.toggle("loading", text === undefined);
      r.lt.textContent = "";
      if (text === undefined) r.lt.textContent = "…";
      else render(r.lt, text, marks, focus);
    }
    for (let i = count; i < this.rows.length; i++) this.rows[i].el.hidden = true;
    // Chunks next to the viewport, for smooth scrolling.
    const k0 = this.chunkOf(first);
    const k1 = this.chunkOf(Math.min(this.lineCount - 1, first + count));
    this.request(k0 - 1);
    this.request(k1 + 1);
  }

  // -------------------------------------------------------------------------------------------
  // Status, jump to line, search

  setStatus(text) {
    this.status.textContent = text;
  }

  updateStatus() {
    const parts = [`${fmtBytes(this.size)}`, `${this.lineCount.toLocaleString("en")} line${this.lineCount === 1 ? "" : "s"}`];
    if (this.live && !this.ended) parts.push(this.streamState === "retrying" ? "reconnecting…" : "live");
    else if (this.live) parts.push("ended");
    this.setStatus(parts.join(" · "));
    this.el.dataset.lines = String(this.lineCount);
  }

  /** updateStatus at most every 200 ms while bytes stream in. */
  updateStatusSoon() {
    if (this.statusTimer) return;
    this.statusTimer = setTimeout(() => {
      this.statusTimer = 0;
      if (!this.destroyed) this.updateStatus();
    }, 200);
  }

  gotoFromInput() {
    const n = Number(this.gotoInput.value);
    if (!Number.isInteger(n) || n < 1) return;
    this.gotoLine(Math.min(n, Math.max(1, this.lineCount)) - 1);
  }

  /** Show a line (0-based) a third of the way down, highlighted. */
  gotoLine(line) {
    this.setFollow(false);
    this.target = line;
    this.setTop(line - Math.floor(this.viewRows() / 3));
    this.forceRedraw();
  }

  forceRedraw() {
    for (const r of this.rows) r.marks = null;
    this.schedule();
  }

  setQuery(text) {
    this.query = text;
    this.current = -1;
    if (this.results && this.results.query !== text) this.clearResults();
    this.matchInfo.textContent = "";
    this.forceRedraw();
    if (text) this.step(0);
  }

  clearResults() {
    this.results = null;
    this.resultsEl.hidden = true;
    this.resultsEl.textContent = "";
  }

  currentResult() {
    const list = this.results ? this.results.items : this.loadedMatches;
    return list && this.current >= 0 ? list[this.current] : null;
  }

  /** Matches in the chunks in memory, in line order. */
  matchesLoaded() {
    const items = [];
    const needle = this.query.toLowerCase();
    const keys = [...this.chunks.keys()].sort((a, b) => a - b);
    for (const k of keys) {
      const lines = this.chunks.get(k);
      const base = this.cps[k][1];
      for (let i = 0; i < lines.length && items.length < 100000; i++) {
        const hay = plainText(lines[i]).toLowerCase();
        let at = hay.indexOf(needle);
        while (at >= 0) {
          items.push({ line: base + i, start: at });
          at = hay.indexOf(needle, at + Math.max(1, needle.length));
        }
      }
    }
    return items;
  }

  /** Go to the next (1), previous (-1) or first visible-or-after (0) match. */
  step(direction) {
    if (!this.query) return;
    let list;
    let where;
    if (this.results) {
      list = this.results.items;
      where = this.results.done ? "in the whole log" : "so far";
    } else {
      this.loadedMatches = this.matchesLoaded();
      list = this.loadedMatches;
      const loaded = [...this.chunks.values()].reduce((n, lines) => n + lines.length, 0);
      where = loaded >= this.lineCount ? "in the log" : `in the ${loaded.toLocaleString("en")} lines loaded`;
    }
    if (!list.length) {
      this.matchInfo.textContent = `no match ${where}`;
      this.current = -1;
      this.forceRedraw();
      return;
    }
    if (direction === 0 || this.current < 0) {
      const from = Math.floor(this.topLine);
      let i = list.findIndex((m) => m.line >= from);
      if (direction < 0) i = (i <= 0 ? list.length : i) - 1;
      this.current = i < 0 ? 0 : i;
    } else {
      this.current = (this.current + direction + list.length) % list.length;
    }
    const m = list[this.current];
    this.matchInfo.textContent = `${this.current + 1} of ${list.length}${list.length >= MAX_RESULTS && this.results ? "+" : ""} ${where}`;
    this.setFollow(false);
    const rows = this.viewRows();
    if (m.line < this.topLine || m.line >= this.topLine + rows - 1) this.setTop(m.line - Math.floor(rows / 3));
    this.forceRedraw();
  }

  stopSearch() {
    if (this.searchAbort) this.searchAbort.abort();
  }

  /** Read the whole log by ranges, in order, listing the matches (at most MAX_RESULTS). */
  async searchWhole() {
    const query = this.query || this.searchInput.value;
    if (!query) {
      this.searchInput.focus();
      return;
    }
    this.query = query;
    const needle = query.toLowerCase();
    const abort = new AbortController();
    this.searchAbort = abort;
    this.wholeButton.textContent = "Stop";
    const results = { query, items: [], done: false };
    this.results = results;
    this.current = -1;
    this.resultsEl.textContent = "";
    this.resultsEl.hidden = false;
    const end = this.size;
    let offset = 0;
    let line = 0;
    let carry = new Uint8Array(0);
    try {
      while (offset < end && results.items.length < MAX_RESULTS) {
        const next = Math.min(end, offset + SEARCH_RANGE);
        const data = concat(carry, await this.source.range(offset, next, abort.signal));
        offset = next;
        const cut = offset >= end ? data.length : data.lastIndexOf(NL) + 1;
        const look = (text) => {
          if (text.length < needle.length) return;
          const hay = plainText(text);
          const at = hay.toLowerCase().indexOf(needle);
          const last = results.items[results.items.length - 1];
          if (at >= 0 && !(last && last.line === line)) this.addResult(results, { line, start: at, text: hay });
        };
        if (cut === 0) {
          if (data.length < 4 * SEARCH_RANGE) {
            carry = data; // a line longer than the range: read on
          } else {
            look(decode(data)); // a very long line: look at this piece; its line counts once, at its end
            carry = new Uint8Array(0);
          }
          continue;
        }
        const lines = linesOf(data.subarray(0, cut));
        carry = data.slice(cut);
        for (const text of lines) {
          look(text);
          if (results.items.length >= MAX_RESULTS) break;
          line += 1;
        }
        this.matchInfo.textContent = `${results.items.length} found, ${Math.round((100 * offset) / Math.max(1, end))}% read`;
      }
      results.done = true;
      const more = results.items.length >= MAX_RESULTS ? ` (the first ${MAX_RESULTS})` : "";
      this.matchInfo.textContent = results.items.length
        ? `${results.items.length} lines match in the whole log${more}`
        : "no match in the whole log";
    } catch (err) {
      if (err.name === "AbortError") this.matchInfo.textContent = `stopped: ${results.items.length} found`;
      else this.matchInfo.textContent = `search failed: ${err.message}`;
    } finally {
      this.searchAbort = null;
      this.wholeButton.textContent = "Search whole log";
      this.forceRedraw();
    }
  }

  addResult(results, item) {
    results.items.push(item);
    const index = results.items.length - 1;
    const from = Math.max(0, item.start - 40);
    const snippet = (from ? "…" : "") + item.text.slice(from, item.start + 120);
    const button = h(
      "button",
      {
        type: "button",
        class: "linkish",
        onclick: () => {
          this.current = index;
          this.gotoLine(item.line);
          this.matchInfo.textContent = `${index + 1} of ${results.items.length}`;
        },
      },
      h("span", { class: "ln" }, String(item.line + 1)),
      " ",
      snippet,
    );
    this.resultsEl.appendChild(h("li", null, button));
  }
}
