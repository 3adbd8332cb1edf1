// genstream's page: start a generation and follow it live; rebuild any generation from its log.
// Rendering only: genstream.js follows the run (tokens, resume, gaps, repeats, stalls) and
// hands each event over once, in seq order.
import { follow, followAll } from "./genstream.js";

const TERMINAL = { "generation.succeeded": "finished", "generation.failed": "failed", "generation.cancelled": "cancelled" };
const KEY_STORAGE = "genstream.apiKey";
const $ = (id) => document.getElementById(id);

let run = null; // the generation on screen
let everyRun = null; // followAll(): every run of this key, for the list's live states

function apiKey() { return localStorage.getItem(KEY_STORAGE) || ""; }

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { "Authorization": `Bearer ${apiKey()}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`.trim();
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new Error(detail);
  }
  return response.status === 204 ? null : response;
}

function parseEntities(text) {
  return text.split("\n").map((line) => line.trim()).filter(Boolean).map((line) => {
    const [name, rest = ""] = line.split(":");
    const fields = {};
    for (const part of rest.split(",").map((p) => p.trim()).filter(Boolean)) {
      const [field, type = "str"] = part.split(/\s+/);
      fields[field] = type;
    }
    return { name: name.trim(), fields };
  });
}

function setState(state, detail) {
  const el = $("state");
  el.className = `state ${state}`;
  el.textContent = detail ? `${state} (${detail})` : state;
  $("cancel").hidden = !["connecting", "live", "reconnecting"].includes(state);
  $("retry").hidden = !["failed", "cancelled"].includes(state);
}

// A phase's row: verify and repair rounds each get their own ("verify 2", "repair 1").
function roundKey(phase, round) {
  return phase === "repair" || (phase === "verify" && round > 1) ? `${phase} ${round}` : phase;
}

function phaseKey(event) {
  return roundKey(event.stage, event.data && event.data.round);
}

function completedText(key, startedAt, completedAt, verification) {
  const seconds = (Date.parse(completedAt) - Date.parse(startedAt)) / 1000;
  const outcome = verification ? (verification.ok ? "passed" : "failed") : "done";
  const summary = verification ? `: ${verification.summary}` : "";
  return `${key}: ${outcome} in ${seconds.toFixed(2)} s${summary}`;
}

function checkText(key, check) {
  return `${key}: running (${check.step} ${check.ok ? "passed" : "failed"})`;
}

// A run opened from the list or a link starts from its snapshot, so a long run draws at once;
// `?snapshot=0` in the page's address replays every event instead.
const SNAPSHOTS = new URLSearchParams(location.search).get("snapshot") !== "0";

class Run {
  constructor(id) {
    this.id = id;
    this.progress = 0;
    this.phases = new Map();
    this.following = null; // genstream.js's Follow
    this.pendingText = ""; // model text not on screen yet (see addText)
    this.textFrame = 0;
  }

  reset() {
    $("run").hidden = false;
    $("run-id").textContent = this.id;
    for (const id of ["phases", "files", "log"]) $(id).replaceChildren();
    for (const id of ["model", "viewer", "viewer-path", "stage", "run-error"]) $(id).textContent = "";
    $("zip").hidden = true;
    this.setProgress(0);
    setState("connecting");
    history.replaceState(null, "", `#${this.id}`);
  }

  setProgress(value) {
    this.progress = Math.max(this.progress, value); // only ever forward
    const percent = Math.round(this.progress * 100);
    $("progress-fill").style.width = `${percent}%`;
    $("progress").setAttribute("aria-valuenow", String(percent));
  }

  logRow(cells) {
    const row = document.createElement("tr");
    for (const text of cells) {
      const cell = document.createElement("td");
      cell.textContent = String(text);
      row.append(cell);
    }
    $("log").append(row);
    return row;
  }

  showStage(stage, message) {
    $("stage").textContent = message ? `${stage}: ${message}` : stage;
  }

  // The run as its snapshot reduced events 1..seq: what render() would have drawn from them.
  restore(snapshot) {
    const deltas = snapshot.counts["llm.delta"] || 0;
    const row = this.logRow([`1–${snapshot.seq}`, "snapshot", `${snapshot.seq} events (${deltas} model text)`]);
    row.dataset.through = String(snapshot.seq);
    this.showStage(snapshot.stage, snapshot.message);
    this.setProgress(snapshot.progress || 0);
    $("model").textContent = (snapshot.model_text_truncated ? "…" : "") + snapshot.model_text;
    for (const phase of snapshot.phases) {
      const key = roundKey(phase.phase, phase.round);
      const item = document.createElement("li");
      item.dataset.started = phase.started_at;
      if (phase.status === "completed") {
        item.textContent = completedText(key, phase.started_at, phase.completed_at, phase.verification);
      } else if (phase.checks.length) {
        item.textContent = checkText(key, phase.checks[phase.checks.length - 1]);
      } else {
        item.textContent = `${key}: running`;
      }
      this.phases.set(key, item);
      $("phases").append(item);
    }
    for (const file of snapshot.files) this.addFile(file.path);
    if (snapshot.last_event.type in TERMINAL) this.finish(snapshot.last_event);
  }

  render(event) {
    this.logRow([event.seq, event.type, event.message]);
    this.showStage(event.stage, event.message);
    this.setProgress(event.progress || 0);
    const data = event.data || {};
    if (event.type === "llm.delta" && data.text) {
      this.addText(data.text);
    } else if (event.type === "phase.started") {
      const key = phaseKey(event);
      const item = this.phases.get(key) || document.createElement("li");
      item.textContent = `${key}: running`;
      item.dataset.started = event.timestamp;
      this.phases.set(key, item);
      $("phases").append(item);
    } else if (event.type === "check.completed") {
      const item = this.phases.get(phaseKey(event));
      if (item) item.textContent = checkText(phaseKey(event), data);
    } else if (event.type === "phase.completed") {
      const key = phaseKey(event);
      const item = this.phases.get(key);
      if (item) item.textContent = completedText(key, item.dataset.started, event.timestamp, data.verification);
    } else if (event.type === "file.saved" && data.path) {
      this.addFile(data.path);
    }
    if (event.type in TERMINAL) this.finish(event);
  }

  // The model's text goes on screen once per frame, not once per delta: reading the box's
  // scroll position after each append made Chromium lay out the page per delta, quadratic in
  // the run's length (a 2,000-event replay took 34 s; 0.7 s batched).
  addText(text) {
    this.pendingText += text;
    if (!this.textFrame) this.textFrame = requestAnimationFrame(() => this.flushText());
  }

  flushText() {
    cancelAnimationFrame(this.textFrame);
    this.textFrame = 0;
    if (!this.pendingText) return;
    const model = $("model");
    const atBottom = model.scrollTop + model.clientHeight >= model.scrollHeight - 4;
    model.append(this.pendingText);
    this.pendingText = "";
    if (atBottom) model.scrollTop = model.scrollHeight;
  }

  // Files as a tree: one nested list per folder, files in the order they were saved.
  addFile(path) {
    if ($("files").querySelector(`li[data-path="${CSS.escape(path)}"]`)) return;
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
    button.addEventListener("click", () => this.show(path));
    item.append(button);
    list.append(item);
    $("zip").hidden = false;
  }

  async show(path) {
    $("viewer-path").textContent = path;
    try {
      const response = await api("GET", `/api/generations/${this.id}/files/${path}`);
      $("viewer").textContent = await response.text();
    } catch (error) {
      $("viewer").textContent = `Could not load ${path}: ${error.message}`;
    }
  }

  finish(event) {
    this.flushText();
    const state = TERMINAL[event.type];
    setState(state);
    for (const [stage, item] of this.phases) {
      if (item.textContent.endsWith("running")) item.textContent = `${stage}: ${state === "failed" ? "failed" : "stopped"}`;
    }
    if (state === "finished") this.setProgress(1);
    if (state === "failed") $("run-error").textContent = `Failed: ${(event.data && event.data.error) || event.message}`;
    listGenerations();
  }

  // Live from the stored log on (a reload, an old generation: the stream sends its snapshot
  // first, or with ?snapshot=0 its history); `token` is the one POST /api/generations
  // returned (a run just started: its events from the first), else one is fetched. With
  // `speed`, a finished generation again, at the pace it was recorded (the server paces it).
  open(token, speed) {
    this.reset();
    const replaying = speed !== undefined;
    const following = follow(this.id, {
      apiKey: apiKey(), token, ...(replaying ? { pace: "recorded", speed } : {}),
      snapshot: SNAPSHOTS && !replaying && !token, // a run just started has nothing to reduce
    });
    this.following = following;
    following.addEventListener("snapshot", (e) => this.restore(e.detail));
    following.addEventListener("event", (e) => this.render(e.detail));
    following.addEventListener("state", ({ detail }) => {
      if (detail.state === "live") setState(replaying ? "replaying" : "live");
      else if (detail.state === "reconnecting") setState("reconnecting", `attempt ${detail.attempt}`);
      else if (detail.state === "error") {
        setState("failed", replaying ? "could not replay" : "could not load");
        $("run-error").textContent = detail.reason;
      }
    });
  }

  close() {
    this.following?.close();
    cancelAnimationFrame(this.textFrame);
  }
}

function openRun(id, token) {
  run?.close();
  run = new Run(id);
  run.open(token);
}

function replayRun(id) {
  run?.close();
  run = new Run(id);
  run.open(null, Number($("replay-speed").value));
}

async function listGenerations() {
  if (!apiKey()) return;
  try {
    const page = await (await api("GET", "/api/generations?limit=20")).json();
    const list = $("generations");
    list.replaceChildren();
    for (const item of page.items) {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = "open";
      button.addEventListener("click", () => openRun(item.id));
      li.append(button);
      if (["succeeded", "failed", "cancelled"].includes(item.status)) {
        const replay = document.createElement("button");
        replay.type = "button";
        replay.textContent = "replay";
        replay.addEventListener("click", () => replayRun(item.id));
        li.append(replay);
      }
      li.dataset.id = item.id;
      const live = document.createElement("span");
      live.className = "live-state";
      live.textContent = item.status;
      li.append(` ${item.id.slice(0, 8)} · `, live, ` · ${new Date(item.created_at).toLocaleString()}`);
      list.append(li);
    }
  } catch (error) {
    $("generations").textContent = `Could not list generations: ${error.message}`;
  }
}

// Every run's live state in the list, over one connection (GET /api/stream) however many
// runs are going: a run the list does not show yet (just started elsewhere) refreshes it.
function followEveryRun() {
  everyRun?.close();
  everyRun = null;
  if (!apiKey()) return;
  everyRun = followAll({ apiKey: apiKey(), snapshot: true });
  const unlisted = new Set();
  const show = (state) => {
    const item = $("generations").querySelector(`li[data-id="${CSS.escape(state.generation_id)}"]`);
    if (!item) {
      if (!unlisted.has(state.generation_id)) { // once per run: older runs are not listed
        unlisted.add(state.generation_id);
        listGenerations();
      }
      return;
    }
    const percent = Math.round((state.progress || 0) * 100);
    item.querySelector(".live-state").textContent = state.status === "running"
      ? `running · ${state.stage} ${percent}%` : state.status;
    item.dataset.seq = String(state.seq);
  };
  everyRun.addEventListener("snapshot", (e) => show(e.detail));
  everyRun.addEventListener("event", (e) => show(e.detail));
}

function showKeyState() {
  $("key-state").textContent = apiKey() ? "key saved in this browser" : "no key yet";
}

document.addEventListener("DOMContentLoaded", () => {
  showKeyState();
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    localStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
    $("api-key").value = "";
    showKeyState();
    listGenerations();
    followEveryRun();
  });
  $("spec-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("form-error").textContent = "";
    let spec;
    try {
      spec = $("spec-json").value.trim()
        ? JSON.parse($("spec-json").value)
        : { project: $("project").value.trim(), entities: parseEntities($("entities").value) };
    } catch (error) {
      $("form-error").textContent = `The spec is not valid JSON: ${error.message}`;
      return;
    }
    try {
      const provider = $("provider").value;
      const verify = $("verify").value || undefined;
      const created = await (await api("POST", "/api/generations", { spec, provider, verify })).json();
      openRun(created.id, created.stream_token);
    } catch (error) {
      $("form-error").textContent = `Could not start: ${error.message}`;
    }
  });
  $("cancel").addEventListener("click", async () => {
    if (!run) return;
    try { await api("POST", `/api/generations/${run.id}/cancel`); } catch (error) { $("run-error").textContent = error.message; }
  });
  // Another attempt from the first phase that did not complete: the log goes on, and the page
  // draws the run again from its snapshot (both attempts are in the log below it).
  $("retry").addEventListener("click", async () => {
    if (!run) return;
    const shown = run;
    try {
      await api("POST", `/api/generations/${shown.id}/retry`);
      if (run === shown) openRun(shown.id);
    } catch (error) {
      $("run-error").textContent = `Could not retry: ${error.message}`;
    }
  });
  $("zip").addEventListener("click", async (e) => {
    e.preventDefault();
    if (!run) return;
    const shown = run;
    const failure = "Could not download the zip: ";
    try {
      const blob = await (await api("GET", `/api/generations/${shown.id}/archive`)).blob();
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = `${shown.id}.zip`;
      link.click();
      URL.revokeObjectURL(link.href);
      // A retry that worked clears its own earlier message, never the run's own error.
      if ($("run-error").textContent.startsWith(failure)) $("run-error").textContent = "";
    } catch (error) {
      // 401/404/5xx (the server's detail) or no answer at all: say so where run errors go.
      if (run === shown) $("run-error").textContent = `${failure}${error.message}`;
    }
  });
  $("refresh").addEventListener("click", listGenerations);
  listGenerations();
  followEveryRun();
  const id = location.hash.slice(1);
  if (/^[0-9a-f-]{36}$/.test(id) && apiKey()) openRun(id);
});
