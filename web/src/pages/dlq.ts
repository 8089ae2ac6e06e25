// Dead letters: grouped by type and last error, with bulk reprocess and purge for a
// selection or for every dead letter of a type, each confirmed with its count.
import { api, query, type Task, type TaskPage } from "../api";
import { fmtAge, h, truncate } from "../dom";
import { live } from "../live";
import type { Page } from "../router";
import { can, confirmAction, errorBox } from "../ui";

const MAX = 5000;

export const page: Page = {
  render(root, _params, q) {
    const type = q.get("type") ?? "";
    const error = h("div");
    const groups = h("div", { "data-testid": "dlq-groups" });
    const selected = new Set<string>();
    const bar = h("div", { class: "actions" });
    const count = h("span", { class: "muted", "data-testid": "dlq-selected" }, "0 selected");
    root.append(h("h1", {}, "Dead letters"), error, bar, groups);

    async function act(kind: "reprocess" | "purge", body: { ids?: string[]; all?: boolean; type?: string }, what: string): Promise<void> {
      const verb = kind === "reprocess" ? "Reprocess" : "Purge (delete for good)";
      if (!(await confirmAction(`${verb} ${what}?`))) return;
      try {
        await api.post(`/v1/dlq:${kind}`, body);
        selected.clear();
        await load();
      } catch (e) {
        error.replaceChildren(errorBox(e));
      }
    }
    bar.append(count);
    if (can.operate()) {
      bar.append(h("button", {
        type: "button", "data-testid": "reprocess-selected",
        onclick: () => selected.size && act("reprocess", { ids: [...selected] }, `${selected.size} selected dead letters`),
      }, "Reprocess selected"));
    }
    if (can.purge()) {
      bar.append(h("button", {
        type: "button", class: "danger", "data-testid": "purge-selected",
        onclick: () => selected.size && act("purge", { ids: [...selected] }, `${selected.size} selected dead letters`),
      }, "Purge selected"));
    }
    const updateCount = () => (count.textContent = `${selected.size} selected`);

    async function load(): Promise<void> {
      const all: Task[] = [];
      let token = "";
      try {
        do {
          const r = await api.get<TaskPage>(`/v1/dlq${query({ type, page_size: 1000, page_token: token })}`);
          all.push(...(r.tasks ?? []));
          token = r.next_page_token ?? "";
        } while (token && all.length < MAX);
      } catch (e) {
        error.replaceChildren(errorBox(e));
        return;
      }
      error.replaceChildren();
      // By type, then by last error.
      const byType = new Map<string, Map<string, Task[]>>();
      for (const t of all) {
        const ty = t.spec?.type ?? "";
        const err = truncate(t.last_error || t.reason || "(no error)", 160);
        if (!byType.has(ty)) byType.set(ty, new Map());
        const m = byType.get(ty)!;
        if (!m.has(err)) m.set(err, []);
        m.get(err)!.push(t);
      }
      for (const id of [...selected]) if (!all.some((t) => t.id === id)) selected.delete(id);
      updateCount();
      groups.replaceChildren();
      if (all.length === 0) groups.append(h("p", { class: "muted", "data-testid": "dlq-empty" }, "no dead letters"));
      for (const [ty, errs] of byType) {
        const n = [...errs.values()].reduce((a, b) => a + b.length, 0);
        const head = h("h2", {}, `${ty} `, h("span", { class: "muted" }, `${n} dead letter${n === 1 ? "" : "s"}`));
        const tyActions = h("span", { class: "actions" });
        if (can.operate()) tyActions.append(h("button", { type: "button", "data-testid": `reprocess-type-${ty}`, onclick: () => act("reprocess", { all: true, type: ty }, `every dead letter of type ${ty} (${n})`) }, `Reprocess all ${ty}`));
        if (can.purge()) tyActions.append(h("button", { type: "button", class: "danger", "data-testid": `purge-type-${ty}`, onclick: () => act("purge", { all: true, type: ty }, `every dead letter of type ${ty} (${n})`) }, `Purge all ${ty}`));
        head.append(tyActions);
        groups.append(head);
        for (const [err, tasks] of errs) {
          const groupBox = h("input", { type: "checkbox", title: "select the group" });
          groupBox.checked = tasks.every((t) => selected.has(t.id));
          groupBox.addEventListener("change", () => {
            for (const t of tasks) groupBox.checked ? selected.add(t.id) : selected.delete(t.id);
            for (const cb of box.querySelectorAll<HTMLInputElement>("input[data-id]")) cb.checked = groupBox.checked;
            updateCount();
          });
          const box = h("details", { class: "dlq-group", "data-testid": "dlq-group" },
            h("summary", {}, groupBox, ` ${tasks.length} × `, h("code", {}, err)),
            h("table", { class: "list" }, h("tbody", {}, ...tasks.slice(0, 200).map((t) => {
              const cb = h("input", { type: "checkbox", "data-id": t.id, "data-testid": `dlq-select-${t.id}` });
              cb.checked = selected.has(t.id);
              cb.addEventListener("change", () => {
                cb.checked ? selected.add(t.id) : selected.delete(t.id);
                updateCount();
              });
              return h("tr", { "data-testid": `dlq-row-${t.id}` }, h("td", {}, cb), h("td", {}, h("a", { href: `/tasks/${t.id}` }, t.id)),
                h("td", {}, t.spec?.tenant || "default"), h("td", {}, `${t.attempts ?? 0} attempts`), h("td", {}, fmtAge(t.finished_unix_ms)));
            }))));
          groups.append(box);
        }
      }
    }
    void load();
    return live.subscribe(["dlq"], load);
  },
};
