/* Sign-in: e-mail + password (a session token), or a pasted API key. */

import * as api from "../api.js";
import { field, formValues, h, messageLine, showMessage, whileBusy } from "../dom.js";

export function render(main, { notice, onSignedIn }) {
  const message = messageLine();
  if (notice) showMessage(message, notice, "info");

  const passwordForm = h("form", { class: "stack", id: "signin-form" },
    field("E-mail", h("input", { name: "email", type: "email", autocomplete: "username", required: true })),
    field("Password", h("input", { name: "password", type: "password", autocomplete: "current-password", required: true })),
    h("button", { type: "submit" }, "Sign in"));

  passwordForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const { email } = formValues(passwordForm);
    const password = String(new FormData(passwordForm).get("password")); // never trimmed
    showMessage(message, "Signing in…", "info");
    whileBusy(passwordForm, async () => {
      try {
        const reply = await api.post("/v1/auth/login", { email, password });
        api.setToken(reply.token);
        onSignedIn({ kind: "user", user: reply.user, role: reply.user.role });
      } catch (error) {
        showMessage(message, error.message, "error");
      }
    });
  });

  const keyForm = h("form", { class: "stack", id: "key-form" },
    field("API key", h("input", { name: "key", type: "password", autocomplete: "off", required: true, spellcheck: "false" })),
    h("button", { type: "submit", class: "secondary" }, "Use this key"));

  keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const { key } = formValues(keyForm);
    whileBusy(keyForm, async () => {
      try {
        const identity = await api.get("/v1/auth/me", {}, { token: key });
        api.setToken(key);
        onSignedIn(identity);
      } catch (error) {
        showMessage(message, error.message, "error");
      }
    });
  });

  main.append(h("section", { class: "card signin" },
    h("h1", {}, "Sign in to Meterline"),
    message,
    passwordForm,
    h("details", { class: "key-option" }, h("summary", {}, "Use an API key instead"), keyForm)));
  passwordForm.querySelector("input").focus();
  // a later word for this page (e.g. how signing out ended) without drawing the forms again,
  // so nothing typed meanwhile is lost
  return { notice: (text, kind = "info") => showMessage(message, text, kind) };
}
