// Small charts drawn by hand in SVG. Each function returns a <figure>: its caption, a one-line
// summary, the chart (an <svg role="img"> named by the caption), a legend, and the same numbers
// as a <table> (in a <details>) for screen readers and for anyone who wants exact values.
// Nothing is written as HTML text: every element is created, every string set as text.
// Colours are theme.css's names only, through classes dashboard.css styles ("tone-ok" fills
// with var(--ok)), so both colour schemes work. Marks carry data-* attributes with the exact
// numbers they draw (data-day, data-key, data-series, data-value).
//
//   stackedBars(days, series, options)  counts per day, one stacked bar per day
//   lines(days, series, options)        a value per day, as dots joined while days have one
//   bars(items, series, options)        grouped horizontal bars, one group per item
//
// `series` is [{key, label, tone, marker?, dashed?}], tone one of: ok, fail, cancel, running,
// series-1 .. series-4. `options.width` is the width the chart is drawn for (it scales to its
// container: viewBox and width 100%); drawn at the width it is shown at, text stays 12 px.

const SVG = "http://www.w3.org/2000/svg";
const FONT_PX = 12; // dashboard.css draws chart text at this size
let figures = 0; // makes caption ids unique on the page

function append(node, attrs, children) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, String(value));
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

/** An HTML element with attributes and children (nodes or strings, set as text). */
export function h(tag, attrs = {}, ...children) {
  return append(document.createElement(tag), attrs, children);
}

/** An SVG element, likewise. */
export function s(tag, attrs = {}, ...children) {
  return append(document.createElementNS(SVG, tag), attrs, children);
}

/** "Nov 30" for "2026-11-30" (a UTC day); `long`: "Nov 30, 2026". */
export function dayLabel(day, long = false) {
  const options = { month: "short", day: "numeric", timeZone: "UTC", ...(long ? { year: "numeric" } : {}) };
  return new Date(`${day}T00:00:00Z`).toLocaleDateString("en", options);
}

export function formatCount(n) {
  return Number(n).toLocaleString("en");
}

/** 0.43 s, 6.62 s, 12.4 s; "none yet" when there is nothing to measure. */
export function formatSeconds(value) {
  if (value === null || value === undefined) return "none yet";
  return `${value.toFixed(value < 10 ? 2 : 1)} s`;
}

function compact(n) {
  if (n >= 1e6) return `${+(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${+(n / 1e3).toFixed(1)}k`;
  return String(+n.toFixed(2));
}

/** Round steps (1, 2, 2.5, 5 times a power of ten) from 0 to at least `max`. */
function ticks(max, { integer = false, count = 4 } = {}) {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  let step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((candidate) => candidate >= raw);
  if (integer) step = Math.max(1, Math.ceil(step));
  const steps = Math.ceil(max / step - 1e-9);
  return Array.from({ length: steps + 1 }, (_, i) => +(i * step).toFixed(10));
}

function figure(kind, caption, summary, svg, legend, table) {
  const id = `chart-${++figures}`;
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-labelledby", `${id}-caption`);
  svg.setAttribute("aria-describedby", `${id}-summary`);
  return h("figure", { class: "dash-figure", "data-chart": kind },
    h("figcaption", { id: `${id}-caption` }, caption),
    h("p", { id: `${id}-summary`, class: "dash-summary" }, summary),
    svg,
    legend,
    h("details", { class: "dash-table" }, h("summary", {}, "Table of these numbers"), table));
}

function legendOf(series) {
  return h("ul", { class: "dash-legend" }, ...series.map((one) => h("li", {},
    s("svg", { class: "dash-key", viewBox: "0 0 24 12", width: 24, height: 12, "aria-hidden": "true", focusable: "false" },
      one.marker
        ? s("g", {}, s("line", { class: `dash-line tone-${one.tone}${one.dashed ? " dashed" : ""}`, x1: 0, y1: 6, x2: 24, y2: 6 }), marker(one, 12, 6, {}))
        : s("rect", { class: `tone-${one.tone}`, x: 2, y: 1, width: 20, height: 10, rx: 2 })),
    one.label)));
}

function tableOf(caption, headers, rows) {
  return h("table", {},
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, ...headers.map((text) => h("th", { scope: "col" }, text)))),
    h("tbody", {}, ...rows.map(([head, ...cells]) => h("tr", {},
      h("th", { scope: "row" }, head),
      ...cells.map(([text, value]) => h("td", { "data-value": value ?? "" }, text))))));
}

// A table's day: "Nov 30", with the year when the days span more than one.
function tableDay(days) {
  const long = days.length > 0 && days[0].day.slice(0, 4) !== days[days.length - 1].day.slice(0, 4);
  return (entry) => h("time", { datetime: entry.day }, dayLabel(entry.day, long));
}

function canvas(width, height) {
  return s("svg", { class: "dash-chart", viewBox: `0 0 ${width} ${height}`, width: "100%", preserveAspectRatio: "xMidYMid meet" });
}

// The y axis of a chart over days: grid lines and their labels at `marks`; the x axis: a label
// every few days so that labels never overlap, counted back from the last (today).
function dayAxes(svg, days, box, marks, top, format) {
  const y = (value) => box.bottom - (value / top) * (box.bottom - box.top);
  for (const value of marks) {
    svg.append(
      s("line", { class: "dash-grid", x1: box.left, x2: box.right, y1: y(value), y2: y(value) }),
      s("text", { class: "dash-tick", x: box.left - 6, y: y(value), "text-anchor": "end", "dominant-baseline": "middle" }, format(value)));
  }
  const band = (box.right - box.left) / days.length;
  const every = Math.max(1, Math.ceil((FONT_PX * 4.5) / band));
  const half = FONT_PX * 1.8; // half of "Nov 30" at 12 px, about
  days.forEach((entry, i) => {
    if ((days.length - 1 - i) % every !== 0) return;
    const x = box.left + band * (i + 0.5);
    const anchor = x + half > box.right + 8 ? "end" : x - half < 0 ? "start" : "middle";
    const at = { end: Math.min(x + half, box.right + 6), start: 0, middle: x }[anchor];
    svg.append(s("text", { class: "dash-tick", x: at, y: box.bottom + FONT_PX + 6, "text-anchor": anchor }, dayLabel(entry.day)));
  });
  svg.append(s("line", { class: "dash-axis", x1: box.left, x2: box.right, y1: box.bottom, y2: box.bottom }));
  return { y, band };
}

function plotBox(width, height, left) {
  return { left, right: width - 8, top: 10, bottom: height - FONT_PX - 14 };
}

/** Counts per day stacked by series (runs by outcome): one bar per entry of `days`. */
export function stackedBars(days, series, { caption, summary, width = 640, height = 220, tableCaption = caption } = {}) {
  const totals = days.map((entry) => series.reduce((sum, one) => sum + entry[one.key], 0));
  const marks = ticks(Math.max(...totals), { integer: true });
  const top = marks[marks.length - 1];
  const svg = canvas(width, height);
  const box = plotBox(width, height, 10 + FONT_PX * 0.6 * String(top).length);
  const { y, band } = dayAxes(svg, days, box, marks, top, String);
  const barWidth = Math.max(1, band * 0.72);
  const thin = barWidth < 4 ? " thin" : ""; // too thin for the gap drawn between stacked parts
  days.forEach((entry, i) => {
    const x = box.left + band * i + (band - barWidth) / 2;
    const parts = series.filter((one) => entry[one.key] > 0).map((one) => `${entry[one.key]} ${one.label.toLowerCase()}`);
    const group = s("g", { "data-day": entry.day },
      s("rect", { class: "dash-hit", x: box.left + band * i, y: box.top, width: band, height: box.bottom - box.top },
        s("title", {}, `${dayLabel(entry.day, true)}: ${totals[i]} runs${parts.length ? ` (${parts.join(", ")})` : ""}`)));
    let base = 0;
    for (const one of series) {
      const value = entry[one.key];
      if (!(value > 0)) continue;
      group.append(s("rect", {
        class: `dash-bar tone-${one.tone}${thin}`, x, y: y(base + value), width: barWidth, height: y(base) - y(base + value),
        "data-day": entry.day, "data-series": one.key, "data-value": value,
      }, s("title", {}, `${dayLabel(entry.day, true)}: ${value} ${one.label.toLowerCase()}`)));
      base += value;
    }
    svg.append(group);
  });
  const day = tableDay(days);
  const table = tableOf(tableCaption, ["Day", ...series.map((one) => one.label), "Total"],
    days.map((entry, i) => [
      day(entry),
      ...series.map((one) => [String(entry[one.key]), entry[one.key]]),
      [String(totals[i]), totals[i]],
    ]));
  return figure("stacked-bars", caption, summary, svg, legendOf(series), table);
}

function marker(one, x, y, attrs, r = 3.5) {
  const common = { class: `dash-dot tone-${one.tone}`, ...attrs };
  if (one.marker === "square") return s("rect", { ...common, x: x - r, y: y - r, width: 2 * r, height: 2 * r });
  return s("circle", { ...common, cx: x, cy: y, r });
}

/** A value per day per series (null: none that day), as marks joined across adjacent days. */
export function lines(days, series, { caption, summary, width = 640, height = 200, format = String, tableCaption = caption } = {}) {
  const values = days.flatMap((entry) => series.map((one) => entry[one.key])).filter((v) => v !== null && v !== undefined);
  const marks = ticks(Math.max(0, ...values));
  const top = marks[marks.length - 1];
  const svg = canvas(width, height);
  const box = plotBox(width, height, 10 + FONT_PX * 0.6 * Math.max(...marks.map((m) => compact(m).length + 2)));
  const { y, band } = dayAxes(svg, days, box, marks, top, (m) => `${compact(m)} s`);
  const x = (i) => box.left + band * (i + 0.5);
  const r = Math.min(3.5, Math.max(1.25, band * 0.3)); // many days: smaller marks, thinner lines
  if (band < 8) svg.classList.add("dense");
  for (const one of series) {
    let path = "";
    days.forEach((entry, i) => {
      const value = entry[one.key];
      if (value === null || value === undefined) return;
      const previous = i > 0 ? days[i - 1][one.key] : null;
      path += `${previous === null || previous === undefined ? "M" : "L"}${x(i).toFixed(2)},${y(value).toFixed(2)}`;
    });
    if (path) svg.append(s("path", { class: `dash-line tone-${one.tone}${one.dashed ? " dashed" : ""}`, d: path }));
  }
  for (const one of series) {
    days.forEach((entry, i) => {
      const value = entry[one.key];
      if (value === null || value === undefined) return;
      const dot = marker(one, x(i), y(value), { "data-day": entry.day, "data-series": one.key, "data-value": value }, r);
      dot.append(s("title", {}, `${dayLabel(entry.day, true)}: ${one.label} ${format(value)}`));
      svg.append(dot);
    });
  }
  const rows = days.filter((entry) => series.some((one) => entry[one.key] !== null && entry[one.key] !== undefined));
  const day = tableDay(days);
  const table = tableOf(tableCaption, ["Day", ...series.map((one) => one.label)],
    rows.map((entry) => [
      day(entry),
      ...series.map((one) => [format(entry[one.key]), entry[one.key]]),
    ]));
  return figure("lines", caption, summary, svg, legendOf(series), table);
}

// The text cut to what `room` pixels hold (the full text stays in the title and the table).
function fit(text, room) {
  const chars = Math.floor(room / (FONT_PX * 0.6));
  return text.length <= chars ? text : `${text.slice(0, Math.max(1, chars - 1))}…`;
}

/** Grouped horizontal bars: `items` are [{key, label, values: {seriesKey: number}}]. */
export function bars(items, series, { caption, summary, width = 640, format = formatCount, labelHeader = "Item", tableCaption = caption } = {}) {
  const barHeight = 14;
  const groupHeight = FONT_PX + 8 + series.length * (barHeight + 3) + 10;
  const height = 10 + items.length * groupHeight + FONT_PX + 14;
  const marks = ticks(Math.max(...items.flatMap((item) => series.map((one) => item.values[one.key]))));
  const top = marks[marks.length - 1];
  const svg = canvas(width, height);
  const valueRoom = FONT_PX * 0.6 * Math.max(...items.flatMap((item) => series.map((one) => format(item.values[one.key]).length))) + 8;
  const box = { left: 8, right: width - valueRoom, top: 10, bottom: height - FONT_PX - 14 };
  const x = (value) => box.left + (value / top) * (box.right - box.left);
  for (const value of marks) {
    svg.append(
      s("line", { class: "dash-grid", x1: x(value), x2: x(value), y1: box.top, y2: box.bottom }),
      s("text", { class: "dash-tick", x: x(value), y: box.bottom + FONT_PX + 6, "text-anchor": "middle" }, compact(value)));
  }
  items.forEach((item, i) => {
    const groupTop = box.top + i * groupHeight;
    const group = s("g", { "data-key": item.key },
      s("text", { class: "dash-label", x: box.left + 4, y: groupTop + FONT_PX }, fit(item.label, width - 20)),
      s("title", {}, item.label));
    series.forEach((one, j) => {
      const value = item.values[one.key];
      const barTop = groupTop + FONT_PX + 6 + j * (barHeight + 3);
      group.append(
        s("rect", {
          class: `dash-bar tone-${one.tone}`, x: box.left, y: barTop, width: Math.max(value > 0 ? 1 : 0, x(value) - box.left), height: barHeight,
          "data-key": item.key, "data-series": one.key, "data-value": value,
        }, s("title", {}, `${item.label}: ${format(value)} ${one.label.toLowerCase()}`)),
        s("text", { class: "dash-tick", x: x(value) + 4, y: barTop + barHeight / 2, "dominant-baseline": "middle" }, format(value)));
    });
    svg.append(group);
  });
  svg.append(s("line", { class: "dash-axis", x1: box.left, x2: box.left, y1: box.top, y2: box.bottom }));
  const table = tableOf(tableCaption, [labelHeader, ...series.map((one) => one.label)],
    items.map((item) => [item.label, ...series.map((one) => [format(item.values[one.key]), item.values[one.key]])]));
  return figure("bars", caption, summary, svg, legendOf(series), table);
}
