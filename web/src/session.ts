// Whether the browser is signed in (a session cookie, or a server with auth off), and the
// header's part of it.
import { api } from "./api";
import { live } from "./live";
import { setWho } from "./ui";

export async function signedIn(): Promise<boolean> {
  try {
    const w = await api.whoami();
    setWho(w);
    const whoEl = document.getElementById("who")!;
    const signout = document.getElementById("signout") as HTMLButtonElement;
    whoEl.textContent = w.principal ?? "";
    signout.hidden = !w.grants || w.grants.length === 0;
    live.start();
    return true;
  } catch {
    return false;
  }
}

