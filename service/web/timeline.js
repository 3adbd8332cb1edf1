// A run's timeline as SVG: the run on the first row, then one bar per phase on a shared time
// axis, coloured by outcome, with its restarts, model retries, waits, stalls and resumes marked
// where they happened. Drawn from a RunModel only, and "now" is the latest event's time, not
// the clock: a replay, a reload and a snapshot draw the same picture as the live run did.
// Bars take the keyboard focus and say everything in words (aria-label, <title>); the details
// line under the chart shows the one hovered or focused.

import { number, seconds } from "./format.js";
import { TERMINAL, phaseLabel, phaseOutcome } from "./runmodel.js";

const SVG = "http://www.w3.org/2000/svg";
const ROW = 26; // px per row
const BAR = 16;
const AXIS = 24; // px under the rows for the time axis
const LABEL = 92; // px on the left for the rows' names
const PAD = 12;
const MARK_NAMES = {
  "llm.retrying": "model retry",
  "llm.waiting": "waiting for the model",
  "generation.stalled": "stalled: worker lost",
  "generation.resumed": "resumed by another worker",
  "generation.retried": "retried",
  "phase.started": "restarted",
};

function el(name, attributes = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

const ms = (timestamp) => Date.parse(timestamp);

// Ticks about one per 90 px: 1, 2 or 5 × 10^k seconds under a minute and a half, then
// whole minutes (1, 2, 5, 10, 15, 30) and hours, so that every label is exact.
const LONG_STEPS = [60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];

function ticks(span, width) {
  const rough = span / Math.max(1, Math.floor(width / 90));
  let step;
  if (rough > 45) {
    step = LONG_STEPS.find((s) => s >= rough) || LONG_STEPS.at(-1) * Math.ceil(rough / LONG_STEPS.at(-1));
  } else {
    const power = 10 ** Math.floor(Math.log10(rough));
    step = [1, 2, 5, 10].map((f) => f * power).find((s) => s >= rough * (1 - 1e-9)) || power * 10;
  }
  const out = [];
  for (let i = 0; i * step <= span * (1 + 1e-9); i += 1) out.push(i * step);
  return { step, values: out };
}

function tickLabel(t, step) {
  if (step >= 3600) return `${t / 3600} h`;
  if (step >= 60) return `${t / 60} min`;
  if (t >= 60) return `${Math.floor(t / 60)}:${String(Math.round(t % 60)).padStart(2, "0")}`;
  const decimals = step >= 1 ? 0 : Math.min(3, Math.ceil(-Math.log10(step)));
  return `${t.toFixed(decimals)} s`;
}

// The words for a phase: what a hover or the keyboard focus shows.
export function phaseWords(phase, endedAt) {
  const label = phaseLabel(phase.phase, phase.round);
  const end = phase.completed_at || endedAt;
  const span = (ms(end) - ms(phase.first_started_at)) / 1000;
  const outcome = phase.verification ? (phase.verification.ok ? "passed" : "failed") : phase.status;
  const parts = [`${label}: ${outcome}`, phase.status === "running" ? `${seconds(span)} so far` : `in ${seconds(span)}`];
  if (phase.requests !== null) parts.push(`${phase.requests} request${phase.requests === 1 ? "" : "s"}`);
  if (phase.prompt_tokens || phase.output_tokens) {
    parts.push(`${number(phase.prompt_tokens)} tokens in, ${number(phase.output_tokens)} out`);
  }
  if (phase.starts > 1) parts.push(`started ${phase.starts} times`);
  if (phase.retries) parts.push(`${phase.retries} model retr${phase.retries === 1 ? "y" : "ies"}`);
  if (phase.waits) parts.push(`waited ${phase.waits} time${phase.waits === 1 ? "" : "s"}`);
  if (phase.model || phase.provider) parts.push(`model ${phase.model || phase.provider}`);
  return parts.join(", ");
}

function markWords(mark) {
  const data = mark.data || {};
  const name = MARK_NAMES[mark.type] || mark.type;
  if (mark.type === "llm.retrying") return `${name} ${data.request} of ${data.of} in ${seconds(data.wait_s || 0)}: ${data.reason}`;
  if (mark.type === "llm.waiting") return `${name} (${seconds(data.waited_s || 0)} of silence)`;
  if (mark.type === "generation.stalled") return `stalled: worker ${data.worker} lost (silent ${seconds(data.silent_s || 0)})`;
  if (mark.type === "generation.resumed") return `resumed by worker ${data.worker}${data.gap_s ? ` after ${seconds(data.gap_s)}` : ""}`;
  if (mark.type === "generation.retried") return `${name} after the run ${data.after}`;
  if (mark.type === "phase.started") return `${name}${data.reason ? `: ${data.reason}` : ""}`;
  return name;
}

// The row a mark sits on: its phase's (the latest phase of that name and round), else the run's.
function markRow(mark, rows) {
  if (["generation.stalled", "generation.resumed", "generation.retried"].includes(mark.type)) return 0;
  const data = mark.data || {};
  const name = data.phase || mark.stage;
  let found = 0;
  rows.forEach((row, index) => {
    const phase = row.phase;
    if (phase && phase.phase === name && (data.round === undefined || phase.round === data.round)
        && ms(phase.first_started_at) <= ms(mark.timestamp)) found = index;
  });
  return found;
}

function markShape(mark, x, y) {
  const kind = mark.type.replace(".", "-");
  if (mark.type === "llm.waiting") return el("circle", { cx: x, cy: y, r: 3, class: `mark ${kind}` });
  if (mark.type === "phase.started") return el("rect", { x: x - 1.5, y: y - BAR / 2 - 2, width: 3, height: BAR + 4, class: `mark ${kind}` });
  const size = 6;
  const points = mark.type === "generation.stalled"
    ? [[x - size, y - size], [x + size, y - size], [x, y + size]] // ▼
    : [[x - size, y + size], [x + size, y + size], [x, y - size]]; // ▲
  return el("polygon", { points: points.map((p) => p.join(",")).join(" "), class: `mark ${kind}` });
}

// Draws `run` into `figure` (a <figure> holding an <svg> and a details line), `width` px wide.
export function drawTimeline(figure, run, width) {
  const svg = figure.querySelector("svg");
  const details = figure.querySelector(".timeline-details");
  // A redraw (once per frame while live) keeps the keyboard focus and the details shown.
  const focused = svg.contains(document.activeElement) ? document.activeElement.dataset.index : null;
  svg.replaceChildren();
  if (!run.createdAt || !run.last) {
    svg.setAttribute("height", "0");
    details.textContent = "Nothing has happened yet.";
    return;
  }
  const start = ms(run.createdAt);
  const endedAt = run.last.timestamp;
  const elapsed = (ms(endedAt) - start) / 1000;
  const span = Math.max(elapsed, 1); // an axis of at least a second
  const phases = [...run.phases.values()];
  const rows = [{ label: "run", phase: null }, ...phases.map((phase) => ({ label: phaseLabel(phase.phase, phase.round), phase }))];
  const plot = Math.max(width - LABEL - PAD * 2, 40);
  const height = rows.length * ROW + AXIS;
  const x = (timestamp) => LABEL + PAD + ((ms(timestamp) - start) / 1000 / span) * plot;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height));

  const { step, values } = ticks(span, plot);
  const grid = el("g", { class: "axis", "aria-hidden": "true" });
  for (const t of values) {
    const tx = LABEL + PAD + (t / span) * plot;
    grid.append(
      el("line", { x1: tx, x2: tx, y1: 0, y2: rows.length * ROW, class: "grid" }),
      el("text", { x: tx, y: rows.length * ROW + 16, "text-anchor": "middle" }, tickLabel(t, step)),
    );
  }
  svg.append(grid);

  const said = {};
  const show = (key, words) => {
    figure.dataset.selected = key;
    details.textContent = words;
  };
  const outcome = run.ended ? TERMINAL[run.last.type] : run.status;
  rows.forEach((row, index) => {
    const y = index * ROW + (ROW - BAR) / 2;
    svg.append(el("text", { x: LABEL, y: y + BAR - 4, "text-anchor": "end", class: "label", "aria-hidden": "true" }, row.label));
    let from;
    let to;
    let words;
    let cls;
    if (row.phase) {
      from = row.phase.first_started_at;
      to = row.phase.completed_at || endedAt;
      words = phaseWords(row.phase, endedAt);
      cls = `bar ${phaseOutcome(row.phase, run.status)[1]}`;
    } else {
      from = run.createdAt;
      to = endedAt;
      const tokens = run.tokens;
      words = `run: ${outcome}, ${seconds(elapsed)}${run.ended ? "" : " so far"}, `
        + `${number(tokens.prompt_tokens)} tokens in, ${number(tokens.output_tokens)} out`
        + (run.attempt > 1 ? `, worker attempt ${run.attempt}` : "");
      cls = { succeeded: "bar ok", failed: "bar failed", cancelled: "bar stopped" }[outcome] || "bar running";
    }
    const x0 = x(from);
    const bar = el("rect", {
      x: x0, y, width: Math.max(x(to) - x0, 2), height: BAR, rx: 3, class: cls,
      tabindex: "0", role: "img", "aria-label": words, "data-row": row.label, "data-index": index,
    });
    bar.append(el("title", {}, words));
    bar.addEventListener("mouseenter", () => show(`row ${index}`, words));
    bar.addEventListener("focus", () => show(`row ${index}`, words));
    said[`row ${index}`] = words;
    svg.append(bar);
  });

  const marks = el("g", { class: "marks" });
  for (const mark of run.marks) {
    const row = markRow(mark, rows);
    const shape = markShape(mark, x(mark.timestamp), row * ROW + ROW / 2);
    const words = `${markWords(mark)} (seq ${mark.seq})`;
    shape.dataset.type = mark.type;
    shape.append(el("title", {}, words));
    shape.addEventListener("mouseenter", () => show(`seq ${mark.seq}`, words));
    said[`seq ${mark.seq}`] = words;
    marks.append(shape);
  }
  svg.append(marks);
  svg.setAttribute("aria-label", `Timeline: ${rows.length - 1} phases over ${seconds(elapsed)}, ${run.marks.length} marked events`);
  details.textContent = said[figure.dataset.selected] || "Hover over or focus a bar for its details.";
  if (focused) svg.querySelector(`[data-index="${focused}"]`)?.focus({ preventScroll: true });
}
