// The sign-in screen: an API token, sent once to POST /api/v1/session, which answers with the
// session and sets an HttpOnly cookie. The token is never kept by the page.

import * as api from "../api.js";
import { h } from "../dom.js";
import { visible } from "../format.js";

export function signIn(done, message = "") {
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    placeholder: "hodei_…",
    "aria-describedby": "token-help",
  });
  const error = h("p", { class: "form-error", role: "alert" }, visible(message));
  const button = h("button", { type: "submit", class: "btn primary" }, "Sign in");
  const form = h(
    "form",
    {
      class: "signin",
      "aria-label": "Sign in",
      onsubmit: async (e) => {
        e.preventDefault();
        const token = input.value.trim();
        if (!token) return;
        button.disabled = true;
        error.textContent = "";
        try {
          const r = await api.request("POST", "/api/v1/session", { json: { token }, quiet401: true });
          input.value = "";
          if (r.ok) {
            done(await r.json());
            return;
          }
          let text = r.status === 401 || r.status === 403 ? "This token is not valid." : `Signing in failed (${r.status}).`;
          try {
            const body = await r.json();
            if (body && body.error && body.error.message) text = body.error.message;
          } catch {
            // keep the generic message
          }
          error.textContent = visible(text);
          input.focus();
        } catch (err) {
          error.textContent = visible(`The server cannot be reached: ${err.message}`);
        } finally {
          button.disabled = false;
        }
      },
    },
    h("h1", null, h("span", { class: "logo", "aria-hidden": "true" }, "◆"), " Hodei Jobs"),
    h("label", { for: "token" }, "API token"),
    input,
    h(
      "p",
      { id: "token-help", class: "help" },
      "Paste an API token (",
      h("code", null, "hodei token create --role viewer"),
      "; the admin token is in the server's home, admin.token). It is sent once; the page keeps only a session cookie.",
    ),
    error,
    button,
  );
  setTimeout(() => input.focus(), 0);
  return h("div", { class: "signin-wrap" }, form);
}
