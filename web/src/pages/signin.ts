// Sign-in: a token (from `drover token create`, or the admin token file a first start
// writes to the data directory) for an HttpOnly session cookie.
import { ApiError, api } from "../api";
import { h } from "../dom";
import { navigate, type Page } from "../router";
import { signedIn } from "../session";
import { errorBox } from "../ui";

export const page: Page = {
  render(root, _params, q) {
    const next = q.get("next") ?? "/";
    const token = h("input", { type: "password", name: "token", autocomplete: "off", placeholder: "drv_…", "data-testid": "signin-token", size: 60 });
    const error = h("div");
    const form = h("form", { class: "signin", "data-testid": "signin-form" },
      h("h1", {}, "Sign in to drover"),
      h("p", { class: "muted" }, "With a token: ", h("code", {}, "drover token create"), " prints one; a server's first start writes its admin token to ", h("code", {}, "<data dir>/admin.token"), "."),
      token, " ", h("button", { type: "submit", "data-testid": "signin-submit" }, "Sign in"), error);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        await api.signIn(token.value.trim());
        token.value = "";
        await signedIn();
        navigate(next.startsWith("/") && !next.startsWith("//") ? next : "/", true);
      } catch (e) {
        error.replaceChildren(errorBox(e instanceof ApiError ? e : String(e)));
      }
    });
    root.append(form);
    token.focus();
  },
};
