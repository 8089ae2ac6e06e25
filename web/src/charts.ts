// Time-series charts (uPlot): axes with units, a legend, sized to their container.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { h } from "./dom";

export interface SeriesDef {
  label: string;
  color: string;
  dash?: number[];
  fill?: string;
}

const COLORS = ["#2f7ed8", "#1aaf5d", "#e4572e", "#f3a712", "#8e44ad", "#17becf", "#7f7f7f"];
export const color = (i: number) => COLORS[i % COLORS.length];

export class Chart {
  readonly el: HTMLElement;
  private plot: uPlot | null = null;
  private observer: ResizeObserver;

  constructor(
    title: string,
    private unit: string,
    private series: SeriesDef[],
  ) {
    this.el = h("div", { class: "chart", "data-testid": `chart-${title.toLowerCase().replace(/[^a-z]+/g, "-")}` },
      h("h3", {}, title));
    this.observer = new ResizeObserver(() => this.resize());
    this.observer.observe(this.el);
  }

  private width(): number {
    return Math.max(240, this.el.clientWidth - 8);
  }

  private resize(): void {
    if (this.plot) this.plot.setSize({ width: this.width(), height: 200 });
  }

  // x: unix seconds; ys: one array per series.
  set(x: number[], ys: (number | null)[][]): void {
    const data = [x, ...ys] as uPlot.AlignedData;
    if (this.plot) {
      this.plot.setData(data);
      return;
    }
    const unit = this.unit;
    const opts: uPlot.Options = {
      width: this.width(),
      height: 200,
      series: [
        { label: "time" },
        ...this.series.map((s) => ({
          label: s.label,
          stroke: s.color,
          dash: s.dash,
          fill: s.fill,
          width: 1.5,
          value: (_u: uPlot, v: number | null) => (v == null ? "–" : `${fmt(v)} ${unit}`),
        })),
      ],
      axes: [
        { label: "time", stroke: "#555" },
        { label: unit, stroke: "#555", size: 60, values: (_u, vals) => vals.map((v) => fmt(v)) },
      ],
      scales: { y: { range: (_u, min, max) => [Math.min(0, min), max > 0 ? max * 1.1 : 1] } },
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
    };
    this.plot = new uPlot(opts, data, this.el);
  }

  destroy(): void {
    this.observer.disconnect();
    this.plot?.destroy();
    this.plot = null;
  }
}

function fmt(v: number): string {
  const a = Math.abs(v);
  if (a >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (a >= 1e4) return `${(v / 1e3).toFixed(0)}k`;
  if (a >= 100) return v.toFixed(0);
  if (a >= 1) return v.toFixed(1);
  if (a === 0) return "0";
  return v.toFixed(3);
}
