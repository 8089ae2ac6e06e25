// The dashboard's entry: the header (who is signed in, live status, pause), the routes, and
// sign-in whenever the API answers 401.
import "./style.css";
import { api, setUnauthenticatedHandler } from "./api";
import { live } from "./live";
import { installLinkHandler, navigate, render, route } from "./router";
import { signedIn } from "./session";
import { setWho } from "./ui";

route(/^\/$/, async () => (await import("./pages/overview")).page);
route(/^\/tasks$/, async () => (await import("./pages/tasks")).page);
route(/^\/tasks\/(\d+)$/, async () => (await import("./pages/task")).page);
route(/^\/workflows$/, async () => (await import("./pages/workflows")).page);
route(/^\/workflows\/(\d+)$/, async () => (await import("./pages/workflow")).page);
route(/^\/pools$/, async () => (await import("./pages/pools")).listPage);
route(/^\/pools\/([A-Za-z0-9_.-]+)$/, async () => (await import("./pages/pools")).poolPage);
route(/^\/dlq$/, async () => (await import("./pages/dlq")).page);
route(/^\/resources$/, async () => (await import("./pages/resources")).page);
route(/^\/events$/, async () => (await import("./pages/events")).page);
route(/^\/signin$/, async () => (await import("./pages/signin")).page);

const status = document.getElementById("live-status")!;
const pause = document.getElementById("pause") as HTMLButtonElement;
const whoEl = document.getElementById("who")!;
const signout = document.getElementById("signout") as HTMLButtonElement;

live.onMode((m) => {
  status.textContent = m;
  status.className = `live m-${m}`;
});
pause.addEventListener("click", () => {
  pause.textContent = live.togglePause() ? "Resume" : "Pause";
});
signout.addEventListener("click", async () => {
  await api.signOut().catch(() => undefined);
  setWho(null);
  live.stop();
  whoEl.textContent = "";
  signout.hidden = true;
  navigate("/signin");
});

function toSignIn(): void {
  if (location.pathname === "/signin") return;
  live.stop();
  const back = location.pathname + location.search;
  navigate(`/signin?next=${encodeURIComponent(back)}`, true);
}
setUnauthenticatedHandler(toSignIn);

installLinkHandler();
void (async () => {
  if (location.pathname !== "/signin" && !(await signedIn())) {
    toSignIn();
    return;
  }
  await render();
})();
