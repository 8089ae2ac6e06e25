// Live updates: the server pushes small "this changed" notices over Server-Sent Events
// (GET /v1/stream, coalesced and rate-limited on the server); each page says which topics
// it shows and refetches only those, one fetch in flight per subscriber. When the stream is
// refused or drops, the page polls every 5 s and tries the stream again with backoff.

export type Topic = "stats" | "tasks" | "workflows" | "pools" | "agents" | "dlq" | "events";
type Mode = "connecting" | "live" | "polling" | "paused";

interface Sub {
  topics: Set<Topic>;
  fn: () => Promise<void>;
  running: boolean;
  again: boolean;
}

const POLL_MS = 5000;

class Live {
  private subs = new Set<Sub>();
  private source: EventSource | null = null;
  private pollTimer: number | undefined;
  private retryTimer: number | undefined;
  private backoff = 1000;
  private paused = false;
  private mode: Mode = "connecting";
  private listeners: ((m: Mode) => void)[] = [];
  private started = false;

  // Calls fn whenever one of `topics` changes; the returned function unsubscribes.
  subscribe(topics: Topic[], fn: () => Promise<void>): () => void {
    const sub: Sub = { topics: new Set(topics), fn, running: false, again: false };
    this.subs.add(sub);
    return () => this.subs.delete(sub);
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    this.connect();
  }

  stop(): void {
    this.started = false;
    this.disconnect();
  }

  onMode(fn: (m: Mode) => void): void {
    this.listeners.push(fn);
    fn(this.mode);
  }

  togglePause(): boolean {
    this.paused = !this.paused;
    if (this.paused) {
      this.disconnect();
      this.setMode("paused");
    } else {
      this.connect();
      this.notify(null);  // catch up at once
    }
    return this.paused;
  }

  private setMode(m: Mode): void {
    this.mode = m;
    for (const l of this.listeners) l(m);
  }

  private connect(): void {
    if (this.paused || !this.started || this.source) return;
    this.setMode("connecting");
    const es = new EventSource("/v1/stream?interval_ms=1000");
    this.source = es;
    es.addEventListener("hello", () => {
      this.backoff = 1000;
      this.stopPolling();
      this.setMode("live");
    });
    es.addEventListener("change", (ev) => {
      let topics: Topic[] = [];
      try {
        topics = (JSON.parse((ev as MessageEvent).data) as { topics?: Topic[] }).topics ?? [];
      } catch {
        topics = [];
      }
      this.notify(new Set(topics));
    });
    es.onerror = () => {
      // Refused (503: too many followers, 401) or dropped: poll, and try again later.
      es.close();
      this.source = null;
      if (this.paused || !this.started) return;
      this.startPolling();
      window.clearTimeout(this.retryTimer);
      this.retryTimer = window.setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 30000);
    };
  }

  private disconnect(): void {
    this.source?.close();
    this.source = null;
    this.stopPolling();
    window.clearTimeout(this.retryTimer);
  }

  private startPolling(): void {
    this.setMode("polling");
    if (this.pollTimer !== undefined) return;
    this.pollTimer = window.setInterval(() => this.notify(null), POLL_MS);
  }

  private stopPolling(): void {
    if (this.pollTimer !== undefined) window.clearInterval(this.pollTimer);
    this.pollTimer = undefined;
  }

  // null: everything may have changed.
  private notify(topics: Set<Topic> | null): void {
    for (const sub of this.subs) {
      if (topics !== null && ![...sub.topics].some((t) => topics.has(t))) continue;
      void this.run(sub);
    }
  }

  private async run(sub: Sub): Promise<void> {
    if (sub.running) {
      sub.again = true;  // one more fetch after this one, however many notices came
      return;
    }
    sub.running = true;
    try {
      do {
        sub.again = false;
        await sub.fn().catch(() => undefined);  // the page shows its own errors
      } while (sub.again && this.subs.has(sub));
    } finally {
      sub.running = false;
    }
  }
}

export const live = new Live();
