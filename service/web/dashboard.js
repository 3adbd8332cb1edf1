// The dashboard: the caller's numbers from GET /api/stats as headline figures and SVG charts
// (charts.js), each chart with its numbers as a table. An ES module, no dependencies.
//
//   import { loadDashboard, renderDashboard } from "/static/dashboard.js";
//   loadDashboard(root, { fetchStats, days = 30, headingLevel = 2 })
//       A period picker (7, 30, 90 or 366 days), a loading state, then the stats; if
//       fetchStats rejects, the error in words (role="alert") and a "Try again" button.
//       fetchStats(days) returns the parsed JSON of GET /api/stats?days=N (the page calls the
//       API with its key). Resolves to the stats, or null after showing an error.
//   renderDashboard(root, stats, { headingLevel = 2 })
//       Empties `root` and draws `stats` into it, touching nothing else (no request, no
//       timer); charts are drawn for root's width. An account with no runs gets a helpful
//       empty state, never empty charts. Headings start at <h{headingLevel}>.
//
// Both mark `root` with class "dashboard" and data-state: loading | ready | empty | error.
// The page must link /static/theme.css and /static/dashboard.css (colours and layout).
import { bars, dayLabel, formatCount, formatSeconds, h, lines, stackedBars } from "./charts.js";

const OUTCOMES = [
  { key: "succeeded", label: "Succeeded", tone: "ok" },
  { key: "failed", label: "Failed", tone: "fail" },
  { key: "cancelled", label: "Cancelled", tone: "cancel" },
  { key: "in_progress", label: "In progress", tone: "running" },
];
const DURATIONS = [
  { key: "p50_duration_s", label: "Median (p50)", tone: "series-1", marker: "circle" },
  { key: "p95_duration_s", label: "95th percentile (p95)", tone: "series-2", marker: "square", dashed: true },
];
const TOKENS = [
  { key: "prompt", label: "Prompt (in)", tone: "series-1" },
  { key: "output", label: "Output (out)", tone: "series-2" },
];
const RECOVERIES = [
  ["resumed", "Resumed", "taken over after a worker stopped"],
  ["retried", "Retried", "started again by their owner"],
  ["repair", "Repaired", "code fixed after failing verification"],
  ["phase_retry", "Phase retries", "a phase started again"],
  ["failed", "Failed", "times a run ended in an error"],
];
const PERIODS = [7, 30, 90, 366];
let pickers = 0; // makes the period picker's id unique on the page

function figureCard(key, label, value, text, note) {
  return h("div", { class: "dash-card", "data-figure": key },
    h("dt", {}, label),
    h("dd", { "data-value": value ?? "" }, text),
    note ? h("dd", { class: "dash-note" }, note) : null);
}

function group(title, level, cards) {
  return h("section", { class: "dash-group" }, h(`h${level}`, {}, title), h("dl", { class: "dash-cards" }, ...cards));
}

function headline(stats, level) {
  const runs = stats.generations;
  const finished = runs.succeeded + runs.failed + runs.cancelled;
  const rate = finished ? runs.succeeded / finished : null;
  const seconds = (key, label, which) => figureCard(`${key}_${which}`, label, stats[key][which], formatSeconds(stats[key][which]));
  return h("section", { class: "dash-section" },
    h(`h${level}`, {}, "All runs"),
    h("div", { class: "dash-groups" },
      group("Runs", level + 1, [
        figureCard("total", "Runs", runs.total, formatCount(runs.total)),
        figureCard("success_rate", "Success rate", rate,
          rate === null ? "none finished yet" : `${Math.round(rate * 100)}%`,
          finished ? `${runs.succeeded} of ${finished} finished` : null),
        ...OUTCOMES.map((one) => figureCard(one.key, one.label, runs[one.key], formatCount(runs[one.key]))),
      ]),
      group("Timing", level + 1, [
        seconds("duration_s", "Duration, median", "p50"),
        seconds("duration_s", "Duration, p95", "p95"),
        seconds("to_first_event_s", "To first event, median", "p50"),
        seconds("to_first_event_s", "To first event, p95", "p95"),
        seconds("to_first_file_s", "To first file, median", "p50"),
        seconds("to_first_file_s", "To first file, p95", "p95"),
      ]),
      group("Tokens", level + 1, [
        figureCard("tokens_prompt", "In (prompt)", stats.tokens.prompt, formatCount(stats.tokens.prompt)),
        figureCard("tokens_output", "Out (output)", stats.tokens.output, formatCount(stats.tokens.output)),
      ]),
      group("Recoveries", level + 1, RECOVERIES.map(([key, label, note]) =>
        figureCard(`recoveries_${key}`, label, stats.recoveries[key] ?? 0, formatCount(stats.recoveries[key] ?? 0), note)))));
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function sum(days, key) {
  return days.reduce((total, entry) => total + entry[key], 0);
}

function perDay(stats, level, width) {
  const days = stats.days;
  if (days.length === 0) return h("section", { class: "dash-section" });
  const span = `the last ${plural(days.length, "day")}`;
  const dates = `${dayLabel(days[0].day, true)} to ${dayLabel(days[days.length - 1].day, true)}`;
  const section = h("section", { class: "dash-section" },
    h(`h${level}`, {}, `Last ${plural(days.length, "day")}`),
    h("p", { class: "dash-note" }, "By the UTC day each run was created."));
  const total = sum(days, "total");
  if (total === 0) {
    section.append(h("p", { class: "dash-empty" }, `No runs in ${span}. Choose a longer period to see older ones.`));
    return section;
  }
  const counts = OUTCOMES.map((one) => `${sum(days, one.key)} ${one.label.toLowerCase()}`).join(", ");
  section.append(stackedBars(days, OUTCOMES, {
    caption: "Runs per day, by outcome",
    summary: `${plural(total, "run")} in ${span}: ${counts}.`,
    tableCaption: `Runs per day, by outcome, ${dates}`,
    width,
  }));
  const timed = days.filter((entry) => entry.p50_duration_s !== null);
  if (timed.length === 0) {
    section.append(h("p", { class: "dash-empty" }, `No run created in ${span} has finished yet, so there are no durations to show.`));
    return section;
  }
  const medians = timed.map((entry) => entry.p50_duration_s);
  const range = timed.length === 1
    ? `one day with finished runs: median ${formatSeconds(medians[0])}`
    : `daily median from ${formatSeconds(Math.min(...medians))} to ${formatSeconds(Math.max(...medians))}`;
  section.append(lines(days, DURATIONS, {
    caption: "Run duration per day, median and 95th percentile (seconds from queued to the end)",
    summary: `Finished runs of ${span}, ${range}.`,
    tableCaption: `Run duration per day (days with finished runs), ${dates}`,
    format: formatSeconds,
    width,
  }));
  return section;
}

function modelLabel(row) {
  return `${row.provider} · ${row.model ?? "no model named"}`;
}

function tokens(stats, level, width) {
  const section = h("section", { class: "dash-section" }, h(`h${level}`, {}, "Tokens per model"));
  const rows = stats.tokens_by_model;
  if (rows.length === 0) {
    section.append(h("p", { class: "dash-empty" }, "No model tokens yet: they count once a run completes a phase."));
    return section;
  }
  section.append(bars(rows.map((row) => ({
    key: `${row.provider}/${row.model ?? ""}`,
    label: modelLabel(row),
    values: { prompt: row.prompt, output: row.output },
  })), TOKENS, {
    caption: "Tokens per provider and model, all runs",
    summary: `${formatCount(stats.tokens.prompt)} tokens in and ${formatCount(stats.tokens.output)} out, over ${plural(rows.length, "model")}.`,
    labelHeader: "Provider and model",
    width,
  }));
  return section;
}

// The width charts are drawn for: the root's content box, less a figure's padding and border,
// so that chart text shows at its own size; 640 when the root is not laid out (detached, hidden).
function chartWidth(root) {
  const style = getComputedStyle(root);
  const width = root.clientWidth - parseFloat(style.paddingLeft || "0") - parseFloat(style.paddingRight || "0");
  return width > 0 ? Math.max(240, Math.min(1100, Math.round(width - 26))) : 640;
}

function draw(root, stats, level) {
  if (stats.generations.total === 0) {
    root.dataset.state = "empty";
    root.replaceChildren(h("section", { class: "dash-section dash-empty" },
      h(`h${level}`, {}, "No runs yet"),
      h("p", {}, "Start a generation and this view fills in: how many runs succeeded or failed each day, "
        + "how long they took, how soon the first file appeared, the tokens each model used, and how often "
        + "a run needed help.")));
    return;
  }
  const width = chartWidth(root);
  root.dataset.state = "ready";
  root.replaceChildren(headline(stats, level), perDay(stats, level, width), tokens(stats, level, width));
}

/** Empties `root` and draws `stats` (GET /api/stats's JSON) into it. */
export function renderDashboard(root, stats, { headingLevel = 2 } = {}) {
  root.classList.add("dashboard");
  draw(root, stats, headingLevel);
}

/** Asks `fetchStats(days)` for the stats and draws them, with a period picker above. */
export async function loadDashboard(root, { fetchStats, days = 30, headingLevel = 2 } = {}) {
  const id = `dash-days-${++pickers}`;
  const periods = PERIODS.includes(days) ? PERIODS : [...PERIODS, days].sort((a, b) => a - b);
  const picker = h("select", { id }, ...periods.map((n) => h("option", { value: n, selected: n === days }, n === 366 ? "366 days (a year)" : `${n} days`)));
  // One live region for the whole life of the view: a screen reader announces a change of its
  // text, not a region that appears with its text already in it.
  const status = h("p", { class: "dash-status", role: "status" });
  const content = h("div", { class: "dash-content" });
  root.classList.add("dashboard");
  root.replaceChildren(h("div", { class: "dash-controls" }, h("label", { for: id }, "Period"), picker, status), content);
  let latest = 0; // only the newest answer is drawn: an older one may arrive after it

  async function load(n) {
    const ticket = ++latest;
    root.dataset.state = "loading";
    status.textContent = "Loading the numbers…";
    content.setAttribute("aria-busy", "true"); // the numbers shown are about to change
    try {
      const stats = await fetchStats(n);
      if (ticket !== latest) return null;
      draw(content, stats, headingLevel);
      status.textContent = content.dataset.state === "ready" ? `Showing the last ${plural(stats.days.length, "day")}.` : "";
      root.dataset.state = content.dataset.state;
      return stats;
    } catch (error) {
      if (ticket !== latest) return null;
      root.dataset.state = "error";
      status.textContent = "";
      const retry = h("button", { type: "button" }, "Try again");
      retry.addEventListener("click", () => load(Number(picker.value)));
      content.replaceChildren(h("div", { class: "dash-error", role: "alert" },
        h("p", {}, `Could not load the numbers: ${(error && error.message) || String(error)}`),
        retry));
      return null;
    } finally {
      if (ticket === latest) content.removeAttribute("aria-busy");
    }
  }

  picker.addEventListener("change", () => load(Number(picker.value)));
  return load(days);
}
