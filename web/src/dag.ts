// A workflow's DAG as SVG, laid out by dagre: a node per task (its step and state), an edge
// per dependency, the critical path highlighted.
import dagre from "@dagrejs/dagre";
import { svg } from "./dom";

export interface DagNode {
  id: string;
  label: string;
  state: string;
  critical: boolean;
  href: string;
}
export interface DagEdge {
  from: string;
  to: string;
  critical: boolean;
}

export function drawDag(nodes: DagNode[], edges: DagEdge[], onOpen: (href: string) => void): SVGElement {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "LR", nodesep: 18, ranksep: 48, marginx: 12, marginy: 12 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of nodes) g.setNode(n.id, { width: Math.max(90, n.label.length * 7 + 24), height: 36 });
  const known = new Set(nodes.map((n) => n.id));
  for (const e of edges) if (known.has(e.from) && known.has(e.to)) g.setEdge(e.from, e.to);
  dagre.layout(g);
  const graph = g.graph();
  const width = Math.ceil(graph.width ?? 100), height = Math.ceil(graph.height ?? 60);
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "dag", "data-testid": "dag" });
  const defs = svg("defs");
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto" });
  marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", class: "dag-arrow" }));
  defs.append(marker);
  root.append(defs);
  for (const e of edges) {
    const ed = g.edge(e.from, e.to);
    if (!ed) continue;
    const d = ed.points.map((p, i) => `${i ? "L" : "M"}${p.x},${p.y}`).join(" ");
    root.append(svg("path", { d, class: `dag-edge${e.critical ? " critical" : ""}`, "marker-end": "url(#arrow)" }));
  }
  for (const n of nodes) {
    const p = g.node(n.id);
    if (!p) continue;
    const grp = svg("g", {
      class: `dag-node s-${n.state}${n.critical ? " critical" : ""}`,
      transform: `translate(${p.x - p.width / 2},${p.y - p.height / 2})`,
      "data-testid": `dag-node-${n.label}`,
      "data-state": n.state,
      tabindex: 0,
      role: "link",
    });
    grp.append(svg("rect", { width: p.width, height: p.height, rx: 6 }));
    const t = svg("text", { x: p.width / 2, y: 15, "text-anchor": "middle" });
    t.textContent = n.label;
    const s = svg("text", { x: p.width / 2, y: 29, "text-anchor": "middle", class: "dag-state" });
    s.textContent = n.state;
    const title = svg("title");
    title.textContent = `${n.label}: ${n.state}${n.critical ? " (critical path)" : ""}`;
    grp.append(t, s, title);
    grp.addEventListener("click", () => onOpen(n.href));
    grp.addEventListener("keydown", (ev) => {
      if ((ev as KeyboardEvent).key === "Enter") onOpen(n.href);
    });
    root.append(grp);
  }
  return root;
}
