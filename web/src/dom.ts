// Building DOM safely: text always goes in as text (never parsed as HTML), so nothing the
// server sends can inject markup.

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | EventListener | undefined | null>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") {
      el.addEventListener(k.slice(2), v as EventListener);
    } else if (v === true) {
      el.setAttribute(k, "");
    } else {
      el.setAttribute(k, String(v));
    }
  }
  append(el, children);
  return el;
}

export function append(el: Element, children: (Child | Child[])[]): void {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

const SVG = "http://www.w3.org/2000/svg";
export function svg(tag: string, attrs: Record<string, string | number> = {}): SVGElement {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

export function clear(el: Element): void {
  while (el.firstChild) el.removeChild(el.firstChild);
}

// Numbers from the API: int64 fields arrive as strings, absent ones as undefined.
export function num(v: string | number | undefined | null): number {
  if (v === undefined || v === null || v === "") return 0;
  return typeof v === "number" ? v : Number(v);
}

export function fmtInt(v: string | number | undefined): string {
  return num(v).toLocaleString("en-US");
}

export function fmtMoney(v: number | undefined): string {
  const n = v ?? 0;
  return n >= 100 ? n.toFixed(0) : n >= 1 ? n.toFixed(2) : n.toFixed(4);
}

export function fmtDuration(ms: number): string {
  if (!isFinite(ms) || ms < 0) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = s / 60;
  if (m < 60) return `${Math.floor(m)} min ${Math.round(s % 60)} s`;
  const hr = m / 60;
  if (hr < 48) return `${Math.floor(hr)} h ${Math.round(m % 60)} min`;
  return `${Math.floor(hr / 24)} d ${Math.round(hr % 24)} h`;
}

export function fmtAge(unixMs: string | number | undefined): string {
  const t = num(unixMs);
  if (!t) return "–";
  return fmtDuration(Date.now() - t);
}

export function fmtTime(unixMs: string | number | undefined): string {
  const t = num(unixMs);
  if (!t) return "–";
  const d = new Date(t);
  return d.toLocaleString("en-GB", { hour12: false });
}

// "TASK_STATE_RETRY_WAIT" -> "retry_wait"
export function enumName(v: string | undefined, prefix: string): string {
  if (!v) return "unspecified";
  return v.startsWith(prefix) ? v.slice(prefix.length).toLowerCase() : v.toLowerCase();
}

export function badge(state: string): HTMLElement {
  return h("span", { class: `badge s-${state}` }, state);
}

export function truncate(s: string | undefined, n: number): string {
  if (!s) return "";
  return s.length > n ? s.slice(0, n - 1) + "…" : s;
}

// bytes fields arrive as base64: JSON pretty-printed when they are JSON, text when they
// are UTF-8, else a hex preview.
export function decodeBytes(b64: string | undefined): { kind: string; text: string; size: number } {
  if (!b64) return { kind: "empty", text: "", size: 0 };
  let raw: string;
  try {
    raw = atob(b64);
  } catch {
    return { kind: "base64", text: b64, size: b64.length };
  }
  const bytes = Uint8Array.from(raw, (c) => c.charCodeAt(0));
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    const hex = Array.from(bytes.slice(0, 256), (x) => x.toString(16).padStart(2, "0")).join(" ");
    return { kind: "binary", text: hex + (bytes.length > 256 ? " …" : ""), size: bytes.length };
  }
  try {
    return { kind: "json", text: JSON.stringify(JSON.parse(text), null, 2), size: bytes.length };
  } catch {
    return { kind: "text", text, size: bytes.length };
  }
}

// A payload, result or checkpoint as the API answers it: the JSON value itself when its
// *_json flag is set, else base64 bytes.
export function decodePayload(value: unknown, json: boolean | undefined): { kind: string; text: string; size: number } {
  if (!json) return decodeBytes(typeof value === "string" ? value : undefined);
  const compact = JSON.stringify(value ?? null);
  return { kind: "json", text: JSON.stringify(value ?? null, null, 2), size: new TextEncoder().encode(compact).length };
}

export function fmtBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

// replaceChildren that skips null/false children (optional parts of a page).
export function replace(el: Element, ...children: (Child | Child[])[]): void {
  clear(el);
  append(el, children);
}
