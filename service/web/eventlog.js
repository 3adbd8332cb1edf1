// The run's event log as a table: one row per event, the time since the run was queued, a
// filter by type and a search. The model's text (`llm.delta`, hundreds per phase) is folded
// into one row per stretch of text that expands on demand, so the ten events that matter are
// not drowned. Rows carry `data-seq` (a folded stretch: `data-first`/`data-last`) so a reader
// (and the tests) can tell exactly which events are on screen.

import { number } from "./format.js";

const DELTA = "llm.delta";
const UNFOLD = 500; // rows an unfolded stretch shows at once: laying out 2,500 took 0.4 s
const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

function cell(text, title) {
  const td = document.createElement("td");
  td.textContent = text;
  if (title) td.title = title;
  return td;
}

export class EventLog {
  // `body`: the table's <tbody>; `filter`: a <select>; `search`: an <input type=search>;
  // `summary`: where "12 of 254 events" goes.
  constructor({ body, filter, search, summary }) {
    this.body = body;
    this.filter = filter;
    this.search = search;
    this.summary = summary;
    this.types = new Set();
    this.total = 0;
    this.start = null; // ms: the run's first event, times are relative to it
    this.group = null; // the open stretch of deltas
    this.dirty = new Set(); // stretches whose row is redrawn at the next frame
    this.frame = 0;
    this.groups = new WeakMap(); // a stretch's row -> the stretch
    this.onFilter = () => this.refilter();
    filter.addEventListener("change", this.onFilter);
    search.addEventListener("input", this.onFilter);
  }

  // The filter and the search boxes outlive a run's log: let go of them.
  close() {
    this.filter.removeEventListener("change", this.onFilter);
    this.search.removeEventListener("input", this.onFilter);
    cancelAnimationFrame(this.frame);
    this.frame = 0;
  }

  reset(createdAt) {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.dirty.clear();
    this.body.replaceChildren();
    this.types.clear();
    this.total = 0;
    this.group = null;
    this.start = createdAt ? Date.parse(createdAt) : null;
    this.filter.replaceChildren(new Option("every type", ""));
    this.search.value = "";
    this.count();
  }

  when(timestamp) {
    if (this.start === null) this.start = Date.parse(timestamp);
    const s = (Date.parse(timestamp) - this.start) / 1000;
    return s < 100 ? `+${s.toFixed(2)} s` : `+${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, "0")}`;
  }

  row(seq, timestamp, type, message) {
    const tr = document.createElement("tr");
    tr.dataset.type = type;
    tr.append(cell(String(seq)), cell(this.when(timestamp), dateFormat.format(new Date(timestamp))), cell(type), cell(message));
    this.typeSeen(type);
    return tr;
  }

  // What a snapshot stood for: one row for events 1..seq.
  addSnapshot(snapshot) {
    this.start = Date.parse(snapshot.created_at);
    const deltas = snapshot.counts[DELTA] || 0;
    const tr = this.row(`1–${snapshot.seq}`, snapshot.timestamp, "snapshot", `${snapshot.seq} events (${deltas} model text), drawn from the run's snapshot`);
    tr.dataset.through = String(snapshot.seq);
    this.total += snapshot.seq;
    this.place(tr);
    this.count();
  }

  add(event) {
    this.total += 1;
    if (event.type === DELTA) {
      this.addDelta(event);
    } else {
      this.group = null;
      const tr = this.row(event.seq, event.timestamp, event.type, event.message);
      tr.dataset.seq = String(event.seq);
      this.place(tr);
    }
    this.later(null);
  }

  addDelta(event) {
    const phase = (event.data && event.data.phase) || event.stage;
    let group = this.group;
    if (!group || group.phase !== phase || group.last !== event.seq - 1) {
      const tr = this.row(event.seq, event.timestamp, DELTA, "");
      tr.classList.add("group");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "fold";
      button.setAttribute("aria-expanded", "false");
      tr.cells[2].replaceChildren(button);
      group = { tr, button, phase, first: event.seq, last: event.seq, events: [], chars: 0, open: false, text: "", shown: 0, limit: UNFOLD };
      button.addEventListener("click", () => this.toggle(group));
      tr.dataset.first = String(event.seq);
      this.group = group;
      this.groups.set(tr, group);
      this.place(tr);
    }
    group.last = event.seq;
    group.events.push(event);
    const text = (event.data && event.data.text) || "";
    group.chars += text.length;
    group.text += text.toLowerCase();
    group.tr.dataset.last = String(event.seq);
    if (group.events.length === 1) this.drawGroup(group); // named from its first moment on
    if (group.open) {
      if (group.shown < group.limit) this.insertDelta(group, event);
      else if (!group.moreRow) this.addMore(group);
    }
    this.later(group);
  }

  // A stretch's row says how many deltas it holds: redrawn once per frame, not per delta.
  later(group) {
    if (group) this.dirty.add(group);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    for (const group of this.dirty) this.drawGroup(group);
    this.dirty.clear();
    this.count();
  }

  drawGroup(group) {
    const count = group.events.length;
    group.tr.cells[0].textContent = group.first === group.last ? String(group.first) : `${group.first}–${group.last}`;
    group.button.textContent = `${DELTA} × ${number(count)}`;
    group.button.setAttribute("aria-label", `${group.open ? "Hide" : "Show"} ${count} model text events of ${group.phase}`);
    group.tr.cells[3].textContent = `model text for ${group.phase}, ${number(group.chars)} characters`;
    group.tr.hidden = !this.visible(group.tr, group.text);
    const more = group.moreRow;
    if (more) more.querySelector("button").textContent = `show the other ${number(count - group.shown)}`;
  }

  insertDelta(group, event) {
    const tr = this.row(event.seq, event.timestamp, DELTA, (event.data && event.data.text) || event.message);
    tr.classList.add("delta");
    tr.dataset.seq = String(event.seq);
    tr.hidden = !this.visible(tr);
    (group.lastRow || group.tr).after(tr);
    group.lastRow = tr;
    group.shown += 1;
  }

  // Past UNFOLD rows, one row offers the rest (500 at a time).
  addMore(group) {
    const tr = document.createElement("tr");
    tr.className = "more";
    const td = document.createElement("td");
    td.colSpan = 4;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "fold-more";
    button.addEventListener("click", () => {
      tr.remove();
      group.moreRow = null;
      group.limit += UNFOLD;
      this.unfold(group);
    });
    td.append(button);
    tr.append(td);
    group.lastRow.after(tr);
    group.moreRow = tr;
    this.later(group);
  }

  // The stretch's deltas up to its limit, then a row that offers the rest, if any.
  unfold(group) {
    const upto = Math.min(group.events.length, group.limit);
    for (let i = group.shown; i < upto; i += 1) this.insertDelta(group, group.events[i]);
    if (group.shown < group.events.length && !group.moreRow) this.addMore(group);
    this.later(group);
  }

  toggle(group) {
    group.open = !group.open;
    group.button.setAttribute("aria-expanded", String(group.open));
    if (group.open) {
      group.lastRow = null;
      group.shown = 0;
      group.limit = UNFOLD;
      this.unfold(group);
    } else {
      let next = group.tr.nextElementSibling;
      while (next && (next.classList.contains("delta") || next.classList.contains("more"))) {
        const gone = next;
        next = next.nextElementSibling;
        gone.remove();
      }
      group.lastRow = null;
      group.moreRow = null;
      group.shown = 0;
    }
    this.flush();
  }

  place(tr) {
    tr.hidden = !this.visible(tr);
    this.body.append(tr);
  }

  typeSeen(type) {
    if (this.types.has(type)) return;
    this.types.add(type);
    const options = [...this.filter.options].slice(1).map((o) => o.value).concat(type).sort();
    const chosen = this.filter.value;
    this.filter.replaceChildren(new Option("every type", ""), ...options.map((t) => new Option(t, t)));
    this.filter.value = chosen;
  }

  visible(tr, extra = "") {
    const type = this.filter.value;
    if (type && tr.dataset.type !== type) return false;
    const needle = this.search.value.trim().toLowerCase();
    return !needle || tr.textContent.toLowerCase().includes(needle) || extra.includes(needle);
  }

  refilter() {
    let shown = 0;
    for (const tr of this.body.rows) {
      const group = this.groups.get(tr);
      tr.hidden = !this.visible(tr, group ? group.text : "");
      if (!tr.hidden) shown += 1;
    }
    this.count(shown);
  }

  // Once per frame; it walks the rows only while a filter or a search is set.
  count(shown) {
    const rows = this.body.rows.length;
    const filtered = this.filter.value || this.search.value.trim();
    if (filtered && shown === undefined) shown = [...this.body.rows].filter((tr) => !tr.hidden).length;
    this.summary.textContent = `${number(this.total)} events in ${number(rows)} rows`
      + (filtered && shown !== undefined ? `, ${number(shown)} match` : "");
  }
}
