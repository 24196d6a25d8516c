// The audit trail (admins only): who did what to which target, newest first.

import * as api from "../api.js";
import { debounce, h, replace } from "../dom.js";
import { visible, when } from "../format.js";
import { errorNote } from "./common.js";

const PAGE = 100;

export function mount(container, route, ctx) {
  document.title = "Audit · Hodei";
  let next = null;
  let gone = false;
  const action = h("input", { type: "search", placeholder: "action (job.cancel)", "aria-label": "Action", value: route.params.get("action") || "" });
  const target = h("input", { type: "search", placeholder: "target", "aria-label": "Target", value: route.params.get("target") || "" });
  const tbody = h("tbody");
  const more = h("button", { type: "button", class: "btn", hidden: true, onclick: () => load(true) }, "Older entries");
  const filters = () => ({ action: action.value.trim(), target: target.value.trim() });
  const reload = debounce(() => {
    history.replaceState(null, "", `#/audit${api.query(filters())}`);
    load(false);
  }, 300);
  action.addEventListener("input", reload);
  target.addEventListener("input", reload);
  container.append(
    h(
      "section",
      { class: "page" },
      h("div", { class: "page-head" }, h("h1", null, "Audit"), h("div", { class: "actions" }, h("button", { type: "button", class: "btn small", onclick: () => load(false) }, "Refresh"))),
      h("div", { class: "filters" }, action, target),
      h("div", { class: "table-wrap" }, h("table", { class: "list audit-table", "aria-label": "Audit trail" },
        h("thead", null, h("tr", null, ["When", "Actor", "Action", "Target", "Detail"].map((c) => h("th", { scope: "col" }, c)))),
        tbody)),
      h("div", { class: "pager" }, more),
    ),
  );

  function row(e) {
    return h(
      "tr",
      { dataset: { seq: String(e.seq) } },
      h("td", { title: visible(e.at) }, when(e.at)),
      h("td", null, visible(e.actor)),
      h("td", { class: "mono" }, visible(e.action)),
      h("td", { class: "mono" }, visible(e.target)),
      h("td", { class: "c-reason" }, visible(e.detail)),
    );
  }

  async function load(older) {
    try {
      const page = await api.get(`/api/v1/audit${api.query({ ...filters(), limit: PAGE, cursor: older ? next : undefined })}`);
      if (gone) return;
      const rows = (page.items || []).map(row);
      if (older) tbody.append(...rows);
      else replace(tbody, rows);
      if (!tbody.children.length) tbody.appendChild(h("tr", { class: "empty" }, h("td", { colspan: "5" }, "No entries.")));
      next = page.next;
      more.hidden = !next;
    } catch (err) {
      if (older) ctx.toast(`loading older entries failed: ${err.message}`, "error");
      else replace(tbody, h("tr", null, h("td", { colspan: "5" }, errorNote(err))));
    }
  }

  load(false);
  return () => {
    gone = true;
    reload.cancel();
  };
}
