// Client-side routing over the History API: every page has a URL of its own (the server
// answers index.html for each page path), links are plain <a href> intercepted here.

export interface Page {
  // Renders into `root`; the returned function, if any, runs when the page is left.
  render(root: HTMLElement, params: string[], query: URLSearchParams): (() => void) | void;
}

type Route = { pattern: RegExp; page: () => Promise<Page> };
const routes: Route[] = [];
let leave: (() => void) | void = undefined;
let renderSeq = 0;

export function route(pattern: RegExp, page: () => Promise<Page>): void {
  routes.push({ pattern, page });
}

export function navigate(url: string, replace = false): void {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  void render();
}

export async function render(): Promise<void> {
  const seq = ++renderSeq;
  const root = document.getElementById("app")!;
  const path = location.pathname;
  for (const r of routes) {
    const m = r.pattern.exec(path);
    if (!m) continue;
    const page = await r.page();
    if (seq !== renderSeq) return;  // another navigation came first
    if (typeof leave === "function") leave();
    root.replaceChildren();
    leave = page.render(root, m.slice(1), new URLSearchParams(location.search));
    for (const a of document.querySelectorAll<HTMLAnchorElement>("#nav a")) {
      const href = a.getAttribute("href")!;
      a.classList.toggle("active", href === "/" ? path === "/" : path.startsWith(href));
    }
    return;
  }
  root.replaceChildren(document.createTextNode(`No page at ${path}.`));
}

export function installLinkHandler(): void {
  document.addEventListener("click", (ev) => {
    if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey) return;
    const a = (ev.target as Element).closest("a");
    if (!a || a.target || a.hasAttribute("download")) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin || url.pathname.startsWith("/v1/")) return;
    ev.preventDefault();
    navigate(url.pathname + url.search);
  });
  window.addEventListener("popstate", () => void render());
}
