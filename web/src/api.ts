// The JSON API the CLI uses (docs/http-api.md), as protobuf's JSON mapping: snake_case
// names, int64 as strings, enums by name, bytes as base64, default values left out; a
// payload, result or checkpoint whose *_json flag is set is the JSON value itself
// (docs/payloads.md).

export type Int64 = string;

export interface TaskSpec {
  tenant?: string;
  type?: string;
  payload?: unknown;
  payload_json?: boolean;
  priority?: string;
  deadline_unix_ms?: Int64;
  cost_budget?: number;
  idempotency_key?: string;
  max_attempts?: number;
  labels?: Record<string, string>;
  depends_on?: Int64[];
  depends_on_finished?: Int64[];
  pool?: string;
}
export interface Attempt {
  number?: number;
  agent_id?: Int64;
  started_unix_ms?: Int64;
  ended_unix_ms?: Int64;
  outcome?: string;
  error?: string;
  counted?: boolean;
  cost?: number;
}
export interface Task {
  id: Int64;
  spec?: TaskSpec;
  state?: string;
  created_unix_ms?: Int64;
  updated_unix_ms?: Int64;
  attempts?: number;
  failures?: number;
  result?: unknown;
  result_json?: boolean;
  last_error?: string;
  checkpoint?: unknown;
  checkpoint_json?: boolean;
  agent_id?: Int64;
  history?: Attempt[];
  reason?: string;
  started_unix_ms?: Int64;
  finished_unix_ms?: Int64;
  workflow_id?: Int64;
  step?: string;
  cost?: number;
  waiting_for?: string;
  contents_hidden?: boolean;
  effective_max_attempts?: number;
}
export interface TaskPage {
  tasks?: Task[];
  next_page_token?: string;
}
export interface Workflow {
  id: Int64;
  tenant?: string;
  name?: string;
  state?: string;
  created_unix_ms?: Int64;
  finished_unix_ms?: Int64;
  tasks?: { step?: string; task_id?: Int64 }[];
  total?: number;
  done?: number;
  succeeded?: number;
  failed?: number;
  canceled?: number;
  reason?: string;
  critical_path_ms?: Int64;
  critical_path?: Int64[];
  cost?: number;
}
export interface StatsResponse {
  tasks_by_state?: Record<string, Int64>;
  queues?: { type?: string; priority?: string; depth?: Int64 }[];
  outstanding?: Int64;
  capacity?: Int64;
  agents?: Int64;
  agent_slots?: Int64;
  agent_slots_busy?: Int64;
  submitted_total?: Int64;
  rejected_total?: Int64;
  succeeded_total?: Int64;
  retries_total?: Int64;
  dead_lettered_total?: Int64;
  uptime_ms?: Int64;
  store?: string;
  ready_held?: Int64;
}
export interface StatsSample {
  unix_ms?: Int64;
  submitted_total?: Int64;
  succeeded_total?: Int64;
  dead_lettered_total?: Int64;
  retries_total?: Int64;
  rejected_total?: Int64;
  failed_attempts_total?: Int64;
  cost_total?: number;
  tasks_by_state?: Record<string, Int64>;
  queue_by_priority?: Record<string, Int64>;
  dispatch_p50_ms?: number;
  dispatch_p99_ms?: number;
  agents?: Int64;
  agent_slots?: Int64;
  agent_slots_busy?: Int64;
}
export interface StatsSeries {
  step_ms?: Int64;
  samples?: StatsSample[];
}
export interface PoolMember {
  id?: string;
  pid?: number;
  state?: string;
  agent_id?: Int64;
  leased?: number;
  started_unix_ms?: Int64;
  capacity_class?: string;
}
export interface ForecastHorizon {
  minutes?: number;
  p10?: number;
  p50?: number;
  p90?: number;
  agents?: number;
  confidence?: number;
  [k: string]: unknown;
}
export interface PoolStatus {
  name: string;
  types?: string[];
  runtime?: string;
  min?: number;
  max?: number;
  desired?: number;
  starting?: number;
  idle?: number;
  busy?: number;
  draining?: number;
  utilization?: number;
  pending?: Int64;
  spend?: number;
  burn_rate?: number;
  hourly_budget?: number;
  price_per_agent_hour?: number;
  members?: PoolMember[];
  mode?: string;
  acquire_warm?: { count?: Int64; p50_ms?: number; p95_ms?: number };
  acquire_cold?: { count?: Int64; p50_ms?: number; p95_ms?: number };
  forecast?: { model?: string; horizons?: ForecastHorizon[] };
}
export interface PoolsResponse {
  pools?: PoolStatus[];
  fleet_burn_rate?: number;
  fleet_hourly_budget?: number;
}
export interface Decision {
  at_unix_ms?: Int64;
  current?: number;
  metric?: number;
  target?: number;
  proposed?: number;
  stabilized?: number;
  desired?: number;
  rule?: string;
  mode?: string;
  reactive?: number;
  predictive?: number;
  confidence?: number;
  predictive_rule?: string;
  forecast?: ForecastHorizon[];
}
export interface LoadMinute {
  unix_minute?: Int64;
  arrivals?: Int64;
  completions?: Int64;
  queue_depth?: Int64;
  agents_starting?: number;
  agents_idle?: number;
  agents_busy?: number;
  agents_draining?: number;
}
export interface AgentStatus {
  id: Int64;
  name?: string;
  types?: string[];
  max_concurrency?: number;
  leased?: number;
  breaker?: string;
  connected?: boolean;
  labels?: Record<string, string>;
  last_seen_unix_ms?: Int64;
}
export interface Usage {
  resources?: {
    name?: string;
    kind?: string;
    capacity?: Int64;
    in_use?: Int64;
    available?: number;
    waiting?: Int64;
    acquired_total?: Int64;
  }[];
  cost_by_tenant?: Record<string, number>;
  cost_by_type?: Record<string, number>;
  tenants?: { tenant?: string; weight?: number; ready?: Int64; dispatched_total?: Int64 }[];
}
export interface Event {
  seq?: Int64;
  unix_ms?: Int64;
  type?: string;
  tenant?: string;
  task_id?: Int64;
  workflow_id?: Int64;
  pool?: string;
  agent_id?: Int64;
  message?: string;
  attrs?: Record<string, string>;
}
export interface Grant {
  tenant?: string;
  role?: string;
}
export interface WhoAmI {
  principal?: string;
  credential?: string;
  grants?: Grant[];
}

// A refusal, with the server's code and message as-is.
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

let onUnauthenticated: () => void = () => {};
export function setUnauthenticatedHandler(fn: () => void): void {
  onUnauthenticated = fn;
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const init: RequestInit = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    (init.headers as Record<string, string>)["Content-Type"] = "application/json";
  }
  let res: Response;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "UNAVAILABLE", `cannot reach the server (${String(e)})`);
  }
  const text = await res.text();
  let data: unknown = {};
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    throw new ApiError(res.status, "INTERNAL", `not JSON from ${path}: ${text.slice(0, 200)}`);
  }
  if (!res.ok) {
    const err = (data as { error?: { code?: string; message?: string } }).error ?? {};
    const e = new ApiError(res.status, err.code ?? String(res.status), err.message ?? res.statusText);
    if (res.status === 401 && !path.startsWith("/v1/session")) onUnauthenticated();
    throw e;
  }
  return data as T;
}

export function query(params: Record<string, string | number | boolean | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === "" || v === false) continue;
    q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

export const api = {
  get: <T>(path: string) => call<T>("GET", path),
  post: <T>(path: string, body: unknown = {}) => call<T>("POST", path, body),
  whoami: () => call<WhoAmI>("GET", "/v1/whoami"),
  signIn: (token: string) => call<WhoAmI>("POST", "/v1/session", { token }),
  signOut: () => call<unknown>("POST", "/v1/session:end", {}),
};
