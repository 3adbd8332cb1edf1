// The run view: one generation on screen, followed live (or replayed) through genstream.js,
// reduced into a RunModel and drawn from it once per animation frame: the state in words,
// the figures, the timeline, the phases with their tokens, the verification, the files, the
// model's text and the event log.

import { follow } from "./genstream.js";
import { EventLog } from "./eventlog.js";
import { FileViewer } from "./fileview.js";
import { number, seconds } from "./format.js";
import { RunModel, TERMINAL, phaseLabel, phaseOutcome } from "./runmodel.js";
import { drawTimeline } from "./timeline.js";

const $ = (id) => document.getElementById(id);
const CHUNK_CHARS = 4096; // the model's text in blocks: a new block, not the whole text, is laid out
const SLOW_DRAW_MS = 100; // the timeline, the phases and the figures: at most ten times a second
const WORDS = { succeeded: "finished", failed: "failed", cancelled: "cancelled" };

// A run opened from the list or a link starts from its snapshot, so a long run draws at once;
// `?snapshot=0` in the page's address replays every event instead.
const SNAPSHOTS = new URLSearchParams(location.search).get("snapshot") !== "0";

function td(text, className) {
  const cell = document.createElement("td");
  cell.textContent = text;
  if (className) cell.className = className;
  return cell;
}

export class RunView {
  // `api(method, path)`: the page's authenticated fetch; `onEnd()`: a run reached its end.
  constructor(id, { apiKey, api, onEnd }) {
    this.id = id;
    this.apiKey = apiKey;
    this.api = api;
    this.onEnd = onEnd;
    this.model = new RunModel(id);
    this.following = null;
    this.connection = "connecting";
    this.attempt = 0;
    this.replaying = false;
    this.pendingText = ""; // model text not on screen yet (see addText)
    this.textBlock = null; // the block of the model's text that grows (see flushText)
    this.blockChars = 0;
    this.textFrame = 0;
    this.drawFrame = 0;
    this.shownFiles = new Set();
    this.closed = false; // close(): it draws nothing more
    this.note = ""; // a message of the page's own (a failed download), shown before the run's error
    this.log = new EventLog({ body: $("log"), filter: $("log-filter"), search: $("log-search"), summary: $("log-summary") });
    this.width = 0; // the timeline's, from the ResizeObserver: never read in a frame (a layout)
    this.resize = new ResizeObserver(([entry]) => {
      this.width = Math.round(entry.contentRect.width);
      this.slowAt = 0;
      this.schedule();
    });
    this.slowAt = 0; // when the slow parts were last drawn (performance.now())
    this.slowTimer = 0;
    this.stick = true; // the model's text box follows its end until its reader scrolls up
    this.onScroll = () => {
      const box = $("model");
      this.stick = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    };
  }

  reset() {
    $("run").hidden = false;
    $("welcome").hidden = true;
    $("run-id").textContent = this.id;
    for (const id of ["phases", "phase-totals", "files", "checks", "figures"]) $(id).replaceChildren();
    for (const id of ["model", "stage", "run-error", "verification-summary", "failure-output"]) $(id).textContent = "";
    this.viewer = new FileViewer($("viewer"), {
      load: async (path) => (await this.api("GET", `/api/generations/${this.id}/files/${path}`)).text(),
    });
    $("viewer").hidden = true;
    $("verification").hidden = true;
    $("failure").hidden = true;
    $("zip").hidden = true;
    $("viewer-hint").hidden = false;
    $("timeline").dataset.selected = "";
    this.log.reset(null);
    this.setProgress(0);
    this.drawState();
    history.replaceState(null, "", `#${this.id}`);
    this.resize.observe($("timeline").querySelector(".timeline-box"));
    $("model").addEventListener("scroll", this.onScroll, { passive: true });
  }

  setProgress(value) {
    const percent = Math.round(Math.max(0, Math.min(1, value)) * 100);
    $("progress-fill").style.width = `${percent}%`;
    $("progress").setAttribute("aria-valuenow", String(percent));
  }

  // The state in words: what the connection and the log say together.
  stateWords() {
    const run = this.model;
    if (run.ended) {
      const state = WORDS[TERMINAL[run.last.type]];
      if (state !== "failed") return [state, state];
      const why = (run.error || run.last.message || "").split("\n")[0];
      return [state, `failed: ${why.length > 90 ? `${why.slice(0, 89)}…` : why}`];
    }
    if (this.connection === "error") return ["failed", `failed (could not ${this.replaying ? "replay" : "load"})`];
    if (this.connection === "reconnecting") return ["reconnecting", `reconnecting (attempt ${this.attempt})`];
    if (this.connection === "connecting") return ["connecting", "connecting"];
    const word = this.replaying ? "replaying" : "live";
    const last = run.last;
    if (!last) return [word, word];
    const data = last.data || {};
    if (last.type === "generation.stalled") return ["stalled", `${word}: stalled, worker ${data.worker} lost; waiting for another worker`];
    if (last.type === "llm.retrying") return ["slow", `${word}: slow model, retry ${data.request} of ${data.of} in ${seconds(data.wait_s || 0)}`];
    if (last.type === "llm.waiting") return ["slow", `${word}: waiting for the model (${seconds(data.waited_s || 0)} so far)`];
    if (last.status === "queued") return [word, `${word}: queued, waiting for a worker`];
    return [word, word];
  }

  drawState() {
    const [kind, words] = this.stateWords();
    const el = $("state");
    el.className = `state ${kind}`;
    if (el.textContent !== words) el.textContent = words;
    const ended = this.model.ended;
    $("cancel").hidden = ended || this.replaying || this.connection === "error";
    $("retry").hidden = !(ended && ["failed", "cancelled"].includes(this.model.status)) || this.replaying;
  }

  // Everything drawn from the model, once per frame however many events came in it.
  schedule() {
    if (!this.drawFrame && !this.closed) this.drawFrame = requestAnimationFrame(() => this.draw());
  }

  draw() {
    cancelAnimationFrame(this.drawFrame);
    this.drawFrame = 0;
    if (this.closed) return; // another run is on screen now
    const run = this.model;
    this.drawState();
    if (run.last) {
      $("stage").textContent = run.last.message ? `${run.last.stage}: ${run.last.message}` : run.last.stage;
      this.setProgress(run.ended && run.status === "succeeded" ? 1 : run.last.progress || 0);
    }
    // The slow parts redraw whole: at most every SLOW_DRAW_MS while events stream in (a
    // 500 events/s run asks for a frame every 16 ms), and always at the end.
    const wait = this.slowAt + SLOW_DRAW_MS - performance.now();
    if (wait <= 0 || run.ended) {
      clearTimeout(this.slowTimer);
      this.slowTimer = 0;
      this.slowAt = performance.now();
      this.drawFigures();
      this.drawPhases();
      this.drawVerification();
      drawTimeline($("timeline"), run, this.width || 600);
    } else if (!this.slowTimer) {
      this.slowTimer = setTimeout(() => {
        this.slowTimer = 0;
        this.schedule();
      }, wait);
    }
    for (const path of run.files.keys()) this.addFile(path);
    const failure = run.status === "failed" && run.ended ? `Failed: ${run.error || run.last.message}` : "";
    const words = [this.note, failure].filter(Boolean).join(" ");
    if ($("run-error").textContent !== words) $("run-error").textContent = words;
  }

  drawFigures() {
    const run = this.model;
    const tokens = run.tokens;
    const phases = [...run.phases.values()];
    const requests = phases.reduce((sum, phase) => sum + (phase.requests || 0), 0);
    const span = run.createdAt && run.last ? (Date.parse(run.last.timestamp) - Date.parse(run.createdAt)) / 1000 : 0;
    const level = run.verification && run.verification.level;
    const verification = !level ? "—" : level === "off" ? "off" : `${run.verification.ok ? "passed" : "failed"} (${level})`;
    const figures = [
      ["elapsed", seconds(span)], ["tokens in", number(tokens.prompt_tokens)],
      ["tokens out", number(tokens.output_tokens)], ["model requests", number(requests)],
      ["files", number(run.files.size)], ["events", number(run.last ? run.last.seq : 0)],
      ["verification", verification],
    ];
    const list = $("figures");
    if (list.children.length !== figures.length) {
      list.replaceChildren(...figures.map(([name]) => {
        const div = document.createElement("div");
        const dt = document.createElement("dt");
        dt.textContent = name;
        div.append(dt, document.createElement("dd"));
        div.dataset.figure = name;
        return div;
      }));
    }
    figures.forEach(([, value], index) => {
      const dd = list.children[index].querySelector("dd");
      if (dd.textContent !== value) dd.textContent = value;
    });
  }

  drawPhases() {
    const run = this.model;
    const rows = [];
    const sums = { requests: 0, prompt: 0, output: 0, retries: 0, files: 0 };
    for (const phase of run.phases.values()) {
      const [outcome, cls] = phaseOutcome(phase, run.status);
      const end = phase.completed_at || (run.last && run.last.timestamp);
      const span = end ? (Date.parse(end) - Date.parse(phase.first_started_at)) / 1000 : 0;
      const tr = document.createElement("tr");
      tr.dataset.phase = phaseLabel(phase.phase, phase.round);
      tr.append(
        td(tr.dataset.phase), td(outcome, `outcome-${cls}`), td(seconds(span), "num"),
        td(phase.requests === null ? "—" : number(phase.requests), "num"),
        td(number(phase.prompt_tokens), "num"), td(number(phase.output_tokens), "num"),
        td(number(phase.retries) + (phase.starts > 1 ? ` (${phase.starts} starts)` : ""), "num"),
        td(number(phase.files), "num"),
      );
      rows.push(tr);
      sums.requests += phase.requests || 0;
      sums.prompt += phase.prompt_tokens;
      sums.output += phase.output_tokens;
      sums.retries += phase.retries;
      sums.files += phase.files;
    }
    $("phases").replaceChildren(...rows);
    const total = document.createElement("tr");
    total.append(td("total"), td(""), td(""), td(number(sums.requests), "num"), td(number(sums.prompt), "num"),
      td(number(sums.output), "num"), td(number(sums.retries), "num"), td(number(sums.files), "num"));
    $("phase-totals").replaceChildren(...(rows.length ? [total] : []));
  }

  drawVerification() {
    const run = this.model;
    // This attempt's verify rounds only: a retried run's earlier rounds stopped for good.
    const verifying = [...run.phases.values()]
      .filter((p) => p.phase === "verify" && (p.retried || 0) === run.retries).at(-1);
    const verification = run.verification;
    const checks = verification ? verification.checks : verifying ? verifying.checks : [];
    $("verification").hidden = !verification && !verifying;
    if ($("verification").hidden) return;
    $("verification-summary").textContent = verification && verification.level === "off"
      ? verification.summary.charAt(0).toUpperCase() + verification.summary.slice(1)
      : verification
      ? `${verification.ok ? "Passed" : "Failed"} (${verification.level}, ${verification.rounds} round${verification.rounds === 1 ? "" : "s"}, ${verification.repairs} repair${verification.repairs === 1 ? "" : "s"}): ${verification.summary}`
      : "Running…";
    $("checks").replaceChildren(...checks.map((check) => {
      const li = document.createElement("li");
      li.className = check.ok ? "ok" : "failed";
      li.textContent = `${check.step}: ${check.reason} (${(check.duration_ms / 1000).toFixed(2)} s)`;
      return li;
    }));
    const failing = checks.find((check) => !check.ok && check.output);
    $("failure").hidden = !failing;
    $("failure-output").textContent = failing ? failing.output : "";
  }

  restore(snapshot) {
    this.model = RunModel.fromSnapshot(snapshot);
    this.log.addSnapshot(snapshot);
    $("model").textContent = (snapshot.model_text_truncated ? "…" : "") + snapshot.model_text;
    $("model").scrollTop = $("model").scrollHeight; // its end, where the text goes on
    this.schedule();
    if (this.model.ended) this.finish();
  }

  render(event) {
    this.model.apply(event);
    this.log.add(event);
    if (event.type === "llm.delta" && event.data && event.data.text) this.addText(event.data.text);
    this.schedule();
    if (event.type in TERMINAL) this.finish();
  }

  // The model's text goes on screen once per frame, not once per delta: reading the box's
  // scroll position after each append made Chromium lay out the page per delta, quadratic in
  // the run's length (a 2,000-event replay took 34 s; 0.7 s batched).
  addText(text) {
    this.pendingText += text;
    if (!this.textFrame) this.textFrame = requestAnimationFrame(() => this.flushText());
  }

  // In blocks of about CHUNK_CHARS, each ending at a line's end: appending to one text node
  // of 200,000 characters made every frame lay all of it out again (following a
  // 10,000-event run grew slower as it went); now only the last block is.
  flushText() {
    cancelAnimationFrame(this.textFrame);
    this.textFrame = 0;
    let text = this.pendingText;
    if (!text) return;
    this.pendingText = "";
    const model = $("model");
    if (!this.textBlock || (this.blockChars >= CHUNK_CHARS && text.includes("\n"))) {
      if (this.textBlock) {
        const cut = text.indexOf("\n") + 1;
        this.textBlock.append(text.slice(0, cut));
        text = text.slice(cut);
      }
      this.textBlock = document.createElement("span");
      this.textBlock.className = "chunk";
      this.blockChars = 0;
      model.append(this.textBlock);
    }
    this.textBlock.append(text);
    this.blockChars += text.length;
    if (this.stick) model.scrollTop = model.scrollHeight;
  }

  // Files as a tree: one nested list per folder, files in the order they were saved.
  addFile(path) {
    if (this.shownFiles.has(path)) return;
    this.shownFiles.add(path);
    let list = $("files");
    const parts = path.split("/");
    for (const folder of parts.slice(0, -1)) {
      let node = [...list.children].find((li) => li.dataset.folder === folder);
      if (!node) {
        node = document.createElement("li");
        node.dataset.folder = folder;
        const name = document.createElement("span");
        name.textContent = `${folder}/`;
        node.append(name, document.createElement("ul"));
        list.append(node);
      }
      list = node.querySelector(":scope > ul");
    }
    const item = document.createElement("li");
    item.dataset.path = path;
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = parts[parts.length - 1];
    button.title = path;
    button.setAttribute("aria-label", `Show ${path}`);
    button.addEventListener("click", () => this.show(path));
    item.append(button);
    list.append(item);
    $("zip").hidden = false;
  }

  async show(path) {
    for (const button of $("files").querySelectorAll("button[aria-current]")) button.removeAttribute("aria-current");
    $("files").querySelector(`li[data-path="${CSS.escape(path)}"] button`)?.setAttribute("aria-current", "true");
    $("viewer-hint").hidden = true;
    $("viewer").hidden = false;
    const file = this.model.files.get(path);
    await this.viewer.show(path, file && file.language);
  }

  // Says `message` where the run's errors go ("" takes it back).
  say(message) {
    this.note = message;
    this.draw();
  }

  finish() {
    this.flushText();
    this.schedule();
    this.onEnd();
  }

  // Live from the stored log on (a reload, an old generation: the stream sends its snapshot
  // first, or with ?snapshot=0 its history); `token` is the one POST /api/generations
  // returned (a run just started: its events from the first), else one is fetched. With
  // `speed`, a finished generation again, at the pace it was recorded (the server paces it).
  open(token, speed) {
    this.reset();
    this.replaying = speed !== undefined;
    const following = follow(this.id, {
      apiKey: this.apiKey, token, ...(this.replaying ? { pace: "recorded", speed } : {}),
      snapshot: SNAPSHOTS && !this.replaying && !token, // a run just started has nothing to reduce
    });
    this.following = following;
    following.addEventListener("snapshot", (e) => this.restore(e.detail));
    following.addEventListener("event", (e) => this.render(e.detail));
    following.addEventListener("state", ({ detail }) => {
      if (["live", "reconnecting", "error"].includes(detail.state)) this.connection = detail.state;
      this.attempt = detail.attempt || 0;
      if (detail.state === "error") this.note = detail.reason;
      this.schedule();
    });
  }

  close() {
    this.closed = true;
    this.following?.close();
    this.log.close();
    this.resize.disconnect();
    $("model").removeEventListener("scroll", this.onScroll);
    clearTimeout(this.slowTimer);
    cancelAnimationFrame(this.textFrame);
    cancelAnimationFrame(this.drawFrame);
  }
}
