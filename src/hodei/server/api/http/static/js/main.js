// The dashboard's shell: the session (who is signed in, the CSRF token), the navigation, and
// hash routing to the pages (#/jobs, #/jobs/ID, #/pipelines, #/pipelines/RUN, #/schedules,
// #/workers, #/audit). Each page is a module whose mount(container, route, ctx) returns a function that
// tears it down (closes its event streams).

import * as api from "./api.js";
import { clear, h, replace } from "./dom.js";
import { visible } from "./format.js";
import { signIn } from "./views/signin.js";
import * as jobs from "./views/jobs.js";
import * as job from "./views/job.js";
import * as pipelines from "./views/pipelines.js";
import * as pipeline from "./views/pipeline.js";
import * as workers from "./views/workers.js";
import * as schedules from "./views/schedules.js";
import * as audit from "./views/audit.js";

const app = document.getElementById("app");
const ctx = {
  session: null,
  can(role) {
    const rank = { viewer: 0, submitter: 1, admin: 2 };
    return Boolean(this.session) && (rank[this.session.role] ?? -1) >= rank[role];
  },
  toast,
};
let unmount = null;
let showingSignIn = false;

const toasts = h("div", { class: "toasts", role: "status", "aria-live": "polite" });

/** A short message at the bottom of the screen; kind "error" stays until dismissed. */
export function toast(message, kind = "info") {
  const close = h("button", { type: "button", class: "toast-close", "aria-label": "Dismiss" }, "×");
  const el = h("div", { class: `toast ${kind}` }, h("span", null, visible(message)), close);
  close.addEventListener("click", () => el.remove());
  toasts.appendChild(el);
  if (kind !== "error") setTimeout(() => el.remove(), 4000);
}

/** "#/jobs/ID?line=3" -> {parts: ["jobs", "ID"], params: URLSearchParams} */
export function parseHash(hash = location.hash) {
  const raw = hash.replace(/^#\/?/, "");
  const [path, search = ""] = raw.split("?", 2);
  const parts = path
    .split("/")
    .filter(Boolean)
    .map((p) => {
      try {
        return decodeURIComponent(p);
      } catch {
        return p;
      }
    });
  return { parts, params: new URLSearchParams(search) };
}

const NAV = [
  ["jobs", "Jobs", "viewer"],
  ["pipelines", "Pipelines", "viewer"],
  ["schedules", "Schedules", "viewer"],
  ["workers", "Workers", "viewer"],
  ["audit", "Audit", "admin"],
];

function header() {
  const links = NAV.filter(([, , role]) => ctx.can(role)).map(([id, label]) =>
    h("a", { href: `#/${id}`, class: "nav-link", dataset: { nav: id } }, label),
  );
  const who = ctx.session;
  const out = h(
    "button",
    {
      type: "button",
      class: "btn small ghost",
      onclick: async () => {
        try {
          await api.del("/api/v1/session");
        } catch (err) {
          if (err.status !== 401) toast(`signing out failed: ${err.message}`, "error");
        }
        api.setCsrf("");
        ctx.session = null;
        showSignIn();
      },
    },
    "Sign out",
  );
  return h(
    "header",
    { class: "topbar" },
    h("a", { href: "#/jobs", class: "brand", "aria-label": "Hodei Jobs: home" }, h("span", { class: "logo", "aria-hidden": "true" }, "◆"), "Hodei"),
    h("nav", { "aria-label": "Main" }, links),
    h(
      "div",
      { class: "who" },
      h("span", { class: "who-name", title: visible(who.name) }, visible(who.name || "signed in")),
      h("span", { class: `role role-${visible(who.role)}`, dataset: { role: who.role } }, visible(who.role)),
      out,
    ),
  );
}

const main = h("main", { id: "main", tabindex: "-1" });

function renderShell() {
  replace(app, h("a", { href: "#main", class: "skip", onclick: (e) => { e.preventDefault(); main.focus(); } }, "Skip to content"), header(), main, toasts);
}

function route() {
  if (!ctx.session) return;
  if (unmount) {
    try {
      unmount();
    } catch (err) {
      console.error(err);
    }
    unmount = null;
  }
  const r = parseHash();
  const [page, id] = r.parts;
  let view = null;
  if (!page || page === "signin") {
    location.replace("#/jobs");
    return;
  }
  if (page === "jobs") view = id ? job : jobs;
  else if (page === "pipelines") view = id ? pipeline : pipelines;
  else if (page === "workers") view = workers;
  else if (page === "schedules") view = schedules;
  else if (page === "audit") view = ctx.can("admin") ? audit : null;
  for (const link of app.querySelectorAll(".nav-link")) {
    if (link.dataset.nav === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  clear(main);
  if (!view) {
    main.appendChild(h("section", { class: "page" }, h("h1", null, "Not found"), h("p", null, "There is no such page. ", h("a", { href: "#/jobs" }, "Go to the jobs"))));
    document.title = "Not found · Hodei";
    return;
  }
  unmount = view.mount(main, { id, params: r.params, parts: r.parts }, ctx) || null;
}

function signedIn(session) {
  ctx.session = session;
  api.setCsrf(session.csrf);
  showingSignIn = false;
  renderShell();
  route();
}

function showSignIn(message) {
  if (unmount) {
    try {
      unmount();
    } catch {
      // ignore
    }
    unmount = null;
  }
  showingSignIn = true;
  ctx.session = null;
  const r = parseHash();
  if (!message && r.parts[0] === "signin" && r.params.get("link") === "expired") {
    message = "That sign-in link has expired or was used already: paste an API token (or run hodei dashboard for a new link).";
  }
  document.title = "Sign in · Hodei";
  replace(app, signIn(signedIn, message), toasts);
}

window.addEventListener("hashchange", () => route());
window.addEventListener("hodei:unauthorized", () => {
  if (!showingSignIn) showSignIn("Your session has ended: sign in again.");
});

async function start() {
  try {
    const r = await api.request("GET", "/api/v1/session", { quiet401: true });
    if (r.status === 401) return showSignIn();
    if (!r.ok) throw new Error(`${r.status} ${r.statusText}`);
    signedIn(await r.json());
  } catch (err) {
    replace(app, h("section", { class: "page" }, h("h1", null, "Hodei cannot be reached"), h("p", null, visible(err.message)), h("button", { type: "button", class: "btn", onclick: () => start() }, "Try again")));
  }
}

start();
