// A log line as the page shows it: the stored bytes decoded as UTF-8, SGR colour and style
// sequences rendered (16 and 256 colours, truecolor, bold, dim, italic, underline, inverse,
// strike-through, overline), and every other control or escape sequence inert: shown as
// visible text (`\x1b` then the rest of the sequence as plain characters, a lone CR as `\x0d`,
// a C1 code point as `\u009b`, a byte that is not valid UTF-8 as `\xNN`), the same view the
// CLI prints. Nothing here is ever parsed as markup: segments become text nodes.

const MAX_PARAMS = 62;
// SGR (kept), and the characters made visible: C0 but tab, DEL, C1, the bidirectional
// controls, and U+DC80-U+DCFF, which stand for bytes that were not valid UTF-8.
const TOKEN = new RegExp(
  `\\x1b\\[([0-9;:]{0,${MAX_PARAMS}})m|[\\x00-\\x08\\x0a-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069\\udc80-\\udcff]`,
  "g",
);
const SGR_ONLY = new RegExp(`\\x1b\\[[0-9;:]{0,${MAX_PARAMS}}m`, "g");
const SHOWN = /[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\udc80-\udcff]/g;

function shown(ch) {
  const code = ch.charCodeAt(0);
  if (code >= 0xdc80 && code <= 0xdcff) return "\\x" + (code - 0xdc00).toString(16).padStart(2, "0");
  if (code < 0x80) return "\\x" + code.toString(16).padStart(2, "0");
  return "\\u" + code.toString(16).padStart(4, "0");
}

// ---------------------------------------------------------------------------------------------
// Decoding

const strict = new TextDecoder("utf-8", { fatal: true });

/** UTF-8 bytes to a string; each byte that is not part of valid UTF-8 becomes U+DC00+byte. */
export function decode(bytes) {
  try {
    return strict.decode(bytes);
  } catch {
    return decodeLoose(bytes);
  }
}

function decodeLoose(b) {
  const out = [];
  let piece = [];
  const flush = () => {
    if (piece.length) {
      out.push(String.fromCharCode(...piece));
      piece = [];
    }
  };
  const n = b.length;
  let i = 0;
  while (i < n) {
    const c = b[i];
    let need = 0;
    let cp = 0;
    let min = 0;
    if (c < 0x80) {
      piece.push(c);
      i += 1;
      if (piece.length > 4096) flush();
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      need = 1; cp = c & 0x1f; min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
      need = 2; cp = c & 0x0f; min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
      need = 3; cp = c & 0x07; min = 0x10000;
    } else {
      piece.push(0xdc00 + c);
      i += 1;
      continue;
    }
    let ok = true;
    let j = 1;
    for (; ok && j <= need; j++) {
      const d = b[i + j];
      if (d === undefined || (d & 0xc0) !== 0x80) ok = false;
      else cp = (cp << 6) | (d & 0x3f);
    }
    if (!ok || cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
      piece.push(0xdc00 + c); // only the lead byte: what follows is looked at again
      i += 1;
      continue;
    }
    if (cp > 0xffff) {
      const v = cp - 0x10000;
      piece.push(0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
    } else {
      piece.push(cp);
    }
    i += need + 1;
    if (piece.length > 4096) flush();
  }
  flush();
  return out.join("");
}

/**
 * Split decoded text into lines at "\n" (the last piece: what follows the last newline). A CR
 * just before a newline is dropped (CR LF is a newline); any other CR stays, to be shown.
 */
export function splitLines(text) {
  const lines = text.split("\n");
  for (let i = 0; i < lines.length - 1; i++) {
    const line = lines[i];
    if (line.length && line.charCodeAt(line.length - 1) === 13) lines[i] = line.slice(0, -1);
  }
  return lines;
}

// ---------------------------------------------------------------------------------------------
// SGR

const CUBE = [0, 95, 135, 175, 215, 255];

/** A 256-colour index as a palette index (0-15) or an "rgb(...)" string. */
function colour256(n) {
  if (!(n >= 0 && n <= 255)) return undefined;
  if (n < 16) return n;
  if (n < 232) {
    const v = n - 16;
    return `rgb(${CUBE[Math.floor(v / 36)]}, ${CUBE[Math.floor(v / 6) % 6]}, ${CUBE[v % 6]})`;
  }
  const g = 8 + 10 * (n - 232);
  return `rgb(${g}, ${g}, ${g})`;
}

function rgb(r, g, b) {
  const ok = [r, g, b].every((v) => Number.isInteger(v) && v >= 0 && v <= 255);
  return ok ? `rgb(${r}, ${g}, ${b})` : undefined;
}

const num = (v) => (v === undefined || v === "" ? NaN : Number(v));

/** Extended colour (38/48/58): from the colon form's sub-parameters, or the semicolon form. */
function extended(sub, tokens, i) {
  if (sub.length > 1) {
    const kind = sub[1];
    if (kind === "5") return [colour256(num(sub[2])), i];
    if (kind === "2") {
      const v = sub.length >= 6 ? sub.slice(3, 6) : sub.slice(2, 5);
      return [rgb(num(v[0]), num(v[1]), num(v[2])), i];
    }
    return [undefined, i];
  }
  const kind = tokens[i + 1];
  if (kind === "5") return [colour256(num(tokens[i + 2])), i + 2];
  if (kind === "2") return [rgb(num(tokens[i + 2]), num(tokens[i + 3]), num(tokens[i + 4])), i + 4];
  return [undefined, i + 1];
}

function applySgr(style, params) {
  const st = { ...style };
  const tokens = params === "" ? ["0"] : params.split(";");
  for (let i = 0; i < tokens.length; i++) {
    const sub = tokens[i].split(":");
    const code = sub[0] === "" ? 0 : Number(sub[0]);
    if (code === 0) {
      for (const k of Object.keys(st)) delete st[k];
    } else if (code === 1) st.b = true;
    else if (code === 2) st.d = true;
    else if (code === 3) st.i = true;
    else if (code === 4) st.u = sub.length > 1 ? sub[1] !== "0" : true;
    else if (code === 7) st.inv = true;
    else if (code === 9) st.s = true;
    else if (code === 21) st.u = true;
    else if (code === 22) { delete st.b; delete st.d; }
    else if (code === 23) delete st.i;
    else if (code === 24) delete st.u;
    else if (code === 27) delete st.inv;
    else if (code === 29) delete st.s;
    else if (code >= 30 && code <= 37) st.fg = code - 30;
    else if (code >= 90 && code <= 97) st.fg = code - 90 + 8;
    else if (code >= 40 && code <= 47) st.bg = code - 40;
    else if (code >= 100 && code <= 107) st.bg = code - 100 + 8;
    else if (code === 39) delete st.fg;
    else if (code === 49) delete st.bg;
    else if (code === 53) st.o = true;
    else if (code === 55) delete st.o;
    else if (code === 38 || code === 48 || code === 58) {
      const [colour, next] = extended(sub, tokens, i);
      i = next;
      if (colour !== undefined && code === 38) st.fg = colour;
      if (colour !== undefined && code === 48) st.bg = colour;
    }
    // Anything else (blink, conceal, fonts...) is ignored: text is never hidden.
  }
  return st;
}

function empty(st) {
  for (const _ in st) return false;
  return true;
}

/**
 * One line's segments: [{t: text, st: style or null, esc: true for a made-visible control}].
 * Joined, the texts are plainText(line). Styles apply to the end of their line.
 */
export function parse(line) {
  const segments = [];
  let style = null;
  let last = 0;
  TOKEN.lastIndex = 0;
  let m;
  while ((m = TOKEN.exec(line)) !== null) {
    if (m.index > last) segments.push({ t: line.slice(last, m.index), st: style, esc: false });
    last = TOKEN.lastIndex;
    if (m[1] !== undefined) {
      const next = applySgr(style || {}, m[1]);
      style = empty(next) ? null : next;
    } else {
      segments.push({ t: shown(m[0]), st: style, esc: true });
    }
  }
  if (last < line.length) segments.push({ t: line.slice(last), st: style, esc: false });
  return segments;
}

/** The text a line shows (SGR removed, controls made visible): what search looks in. */
export function plainText(line) {
  return line.replace(SGR_ONLY, "").replace(SHOWN, shown);
}

/** True when a line needs parsing at all (has an ESC or another control). */
export function isPlain(line) {
  SHOWN.lastIndex = 0;
  return line.indexOf("\x1b") < 0 && !SHOWN.test(line);
}

function styleOf(span, st, esc) {
  const classes = esc ? ["esc"] : [];
  let fg = st ? st.fg : undefined;
  let bg = st ? st.bg : undefined;
  if (st && st.inv) {
    [fg, bg] = [bg === undefined ? "inv-fg" : bg, fg === undefined ? "inv-bg" : fg];
  }
  if (st) {
    if (st.b) classes.push("sgr-b");
    if (st.d) classes.push("sgr-d");
    if (st.i) classes.push("sgr-i");
    if (st.u) classes.push("sgr-u");
    if (st.s) classes.push("sgr-s");
    if (st.o) classes.push("sgr-o");
  }
  if (typeof fg === "number") classes.push(`fg${fg}`);
  else if (fg === "inv-fg") classes.push("fg-inv");
  else if (typeof fg === "string") span.style.color = fg;
  if (typeof bg === "number") classes.push(`bg${bg}`);
  else if (bg === "inv-bg") classes.push("bg-inv");
  else if (typeof bg === "string") span.style.backgroundColor = bg;
  if (classes.length) span.className = classes.join(" ");
}

/**
 * Render a line into `parent` as text nodes and spans. `marks`: sorted [start, end) ranges of
 * the plain text to highlight (search matches); `current`: the index of the one in focus.
 */
export function render(parent, line, marks = null, current = -1) {
  const segments = isPlain(line) ? [{ t: line, st: null, esc: false }] : parse(line);
  if (!marks || marks.length === 0) {
    for (const seg of segments) {
      if (!seg.st && !seg.esc) parent.appendChild(document.createTextNode(seg.t));
      else {
        const span = document.createElement("span");
        styleOf(span, seg.st, seg.esc);
        span.textContent = seg.t;
        parent.appendChild(span);
      }
    }
    return;
  }
  let pos = 0;
  let mi = 0;
  for (const seg of segments) {
    let start = 0;
    const text = seg.t;
    while (start < text.length) {
      const abs = pos + start;
      while (mi < marks.length && marks[mi][1] <= abs) mi++;
      let end = text.length;
      let inMark = false;
      if (mi < marks.length) {
        const [ms, me] = marks[mi];
        if (ms <= abs) {
          inMark = true;
          end = Math.min(text.length, me - pos);
        } else {
          end = Math.min(text.length, ms - pos);
        }
      }
      const piece = text.slice(start, end);
      let node;
      if (!seg.st && !seg.esc) node = document.createTextNode(piece);
      else {
        node = document.createElement("span");
        styleOf(node, seg.st, seg.esc);
        node.textContent = piece;
      }
      if (inMark) {
        const mark = document.createElement("mark");
        if (mi === current) mark.className = "current";
        mark.appendChild(node);
        parent.appendChild(mark);
      } else {
        parent.appendChild(node);
      }
      start = end;
    }
    pos += text.length;
  }
}
