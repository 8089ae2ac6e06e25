// Shared pieces of the pages: the error banner, the confirm dialog, the viewer's roles.
import { ApiError, type WhoAmI } from "./api";
import { h } from "./dom";

export function showError(e: unknown): void {
  const banner = document.getElementById("error-banner")!;
  const msg = e instanceof ApiError ? `${e.code}: ${e.message}` : String(e);
  banner.textContent = msg;
  banner.hidden = false;
}

export function clearError(): void {
  const banner = document.getElementById("error-banner")!;
  banner.hidden = true;
  banner.textContent = "";
}

export function errorBox(e: unknown): HTMLElement {
  const msg = e instanceof ApiError ? `${e.code}: ${e.message}` : String(e);
  return h("div", { class: "inline-error", "data-testid": "inline-error" }, msg);
}

// Resolves true when the user confirms `text` in the page's <dialog>.
export function confirmAction(text: string): Promise<boolean> {
  const dialog = document.getElementById("confirm") as HTMLDialogElement;
  document.getElementById("confirm-text")!.textContent = text;
  return new Promise((resolve) => {
    const done = () => {
      dialog.removeEventListener("close", done);
      resolve(dialog.returnValue === "ok");
    };
    dialog.returnValue = "";
    dialog.addEventListener("close", done);
    dialog.showModal();
  });
}

// What the viewer may do, from /v1/whoami's grants (the server checks every call anyway).
const RANK: Record<string, number> = {
  ROLE_VIEWER: 1,
  ROLE_AGENT: 0,
  ROLE_SUBMITTER: 2,
  ROLE_OPERATOR: 3,
  ROLE_ADMIN: 4,
};
let who: WhoAmI | null = null;
export function setWho(w: WhoAmI | null): void {
  who = w;
}
function rank(): number {
  if (!who) return 0;
  if (!who.grants || who.grants.length === 0) return 4;  // auth off: anonymous may do all
  return Math.max(...who.grants.map((g) => RANK[g.role ?? ""] ?? 0));
}
export const can = {
  cancel: () => rank() >= 2,
  operate: () => rank() >= 3,
  purge: () => rank() >= 4,
};
