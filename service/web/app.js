// genstream's page: the key, the theme, the views (runs at `#` or `#<id>`, the dashboard at
// `#dashboard`), the form that starts a run and the list of runs with their live states.
// The run itself is drawn by runview.js; genstream.js follows it (tokens, resume, gaps,
// repeats, stalls) and hands each event over once, in seq order.
import { followAll } from "./genstream.js";
import { RunView } from "./runview.js";

const KEY_STORAGE = "genstream.apiKey";
const THEME_STORAGE = "genstream.theme";
const KEY_COMMAND = "python -m service keys create --owner you";
const KEY_HINT = `Create one with \`${KEY_COMMAND}\` on the server, then paste it above.`;
const $ = (id) => document.getElementById(id);

let run = null; // the RunView on screen
let everyRun = null; // followAll(): every run of this key, for the list's live states

function apiKey() { return localStorage.getItem(KEY_STORAGE) || ""; }

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

async function api(method, path, body, key = apiKey()) {
  const response = await fetch(path, {
    method,
    headers: { "Authorization": `Bearer ${key}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`.trim();
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
    if (response.status === 401) keyRefused(detail);
    throw new ApiError(response.status, detail);
  }
  return response.status === 204 ? null : response;
}

// --- the theme: the system's until the toggle picks one, remembered in this browser ---------

const systemDark = matchMedia("(prefers-color-scheme: dark)");

function applyTheme() {
  const chosen = localStorage.getItem(THEME_STORAGE);
  if (chosen) document.documentElement.dataset.theme = chosen;
  else delete document.documentElement.dataset.theme;
  const dark = chosen ? chosen === "dark" : systemDark.matches;
  $("theme").setAttribute("aria-pressed", String(dark));
}

function toggleTheme() {
  const dark = $("theme").getAttribute("aria-pressed") === "true";
  localStorage.setItem(THEME_STORAGE, dark ? "light" : "dark");
  applyTheme();
  if (run) run.schedule();
}

// --- the key: checked by one authenticated call before it is kept -------------------------

function showKeyState(words, bad = false) {
  $("key-state").textContent = words;
  $("key-state").classList.toggle("bad", bad);
}

// The notice that says what to do: `why` first, then the command that makes a key.
function showNoKey(why) {
  $("no-key").hidden = !why;
  if (!why) return;
  const command = document.createElement("code");
  command.textContent = KEY_COMMAND;
  $("no-key-text").replaceChildren(
    `${why} Whoever runs the service creates a key with `, command,
    "; paste what it prints into the API key field above and press Save key. The key stays in this browser.",
  );
}

function keyRefused(detail) {
  showKeyState("key refused", true);
  showNoKey(`The service refused the saved key (${detail}).`);
}

async function saveKey(key) {
  showKeyState("checking the key…");
  try {
    await api("GET", "/api/generations?limit=1", undefined, key);
  } catch (error) {
    if (error.status === 401) {
      showKeyState("key refused, not saved", true);
      showNoKey(`That key was refused (${error.message}).`);
    } else {
      showKeyState(`could not check the key: ${error.message}`, true);
    }
    return;
  }
  localStorage.setItem(KEY_STORAGE, key);
  $("api-key").value = "";
  showKeyState("key saved in this browser");
  showNoKey("");
  listGenerations();
  followEveryRun();
  run?.close(); // followed with the key before: open it again with this one
  run = null;
  route();
}

// --- views -------------------------------------------------------------------------------

let dashboard = null; // dashboard.js, loaded on first use

async function showDashboard() {
  const root = $("dashboard");
  if (!apiKey()) {
    root.textContent = "";
    return;
  }
  try {
    dashboard = dashboard || await import("./dashboard.js");
    await dashboard.loadDashboard(root, {
      headingLevel: 3, // under the view's own h2
      fetchStats: async (days) => (await api("GET", `/api/stats?days=${days}`)).json(),
    });
  } catch (error) {
    root.textContent = `Could not show the dashboard: ${error.message}`;
  }
}

function route() {
  const hash = location.hash.slice(1);
  const onDashboard = hash === "dashboard";
  $("runs-view").hidden = onDashboard;
  $("dashboard-view").hidden = !onDashboard;
  $("nav-runs").toggleAttribute("aria-current", !onDashboard);
  $("nav-dashboard").toggleAttribute("aria-current", onDashboard);
  if (!onDashboard) $("nav-runs").setAttribute("aria-current", "page");
  else $("nav-dashboard").setAttribute("aria-current", "page");
  document.title = onDashboard ? "Dashboard · genstream" : "genstream";
  if (onDashboard) {
    run?.close();
    run = null;
    showDashboard();
  } else if (/^[0-9a-f-]{36}$/.test(hash) && apiKey() && (!run || run.id !== hash)) {
    openRun(hash);
  } else if (!/^[0-9a-f-]{36}$/.test(hash) && !run) {
    $("run").hidden = true;
    $("welcome").hidden = false;
  }
}

// --- runs --------------------------------------------------------------------------------

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

function markCurrent() {
  for (const li of $("generations").children) li.classList.toggle("current", Boolean(run) && li.dataset.id === run.id);
}

function openRun(id, token, speed) {
  run?.close();
  run = new RunView(id, { apiKey: apiKey(), api, onEnd: listGenerations });
  run.open(token, speed);
  markCurrent();
}

async function listGenerations() {
  if (!apiKey()) return;
  try {
    const page = await (await api("GET", "/api/generations?limit=20")).json();
    const list = $("generations");
    list.replaceChildren();
    if (!page.items.length) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = "No runs yet: start one above.";
      list.append(li);
    }
    for (const item of page.items) {
      const short = item.id.slice(0, 8);
      const li = document.createElement("li");
      li.dataset.id = item.id;
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = "open";
      button.setAttribute("aria-label", `Open run ${short}`);
      button.addEventListener("click", () => openRun(item.id));
      li.append(button);
      if (["succeeded", "failed", "cancelled"].includes(item.status)) {
        const replay = document.createElement("button");
        replay.type = "button";
        replay.textContent = "replay";
        replay.setAttribute("aria-label", `Replay run ${short}`);
        replay.addEventListener("click", () => openRun(item.id, null, Number($("replay-speed").value)));
        li.append(replay);
      }
      const id = document.createElement("span");
      id.className = "id";
      id.textContent = short;
      const live = document.createElement("span");
      live.className = "live-state";
      live.textContent = item.status;
      const when = document.createElement("span");
      when.className = "when";
      when.textContent = new Date(item.created_at).toLocaleString();
      li.append(id, " · ", live, when);
      list.append(li);
    }
    markCurrent();
  } catch (error) {
    $("generations").textContent = `Could not list your runs: ${error.message}`;
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

async function startRun(e) {
  e.preventDefault();
  $("form-error").textContent = "";
  if (!apiKey()) {
    $("form-error").textContent = `No API key yet. ${KEY_HINT}`;
    return;
  }
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
    if (location.hash === "#dashboard") history.replaceState(null, "", "#");
    route();
    openRun(created.id, created.stream_token);
    listGenerations();
  } catch (error) {
    $("form-error").textContent = `Could not start: ${error.message}`;
  }
}

async function downloadZip(e) {
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
    if (run === shown && shown.note.startsWith(failure)) shown.say(""); // a retry that worked takes its message back
  } catch (error) {
    // 401/404/5xx (the server's detail) or no answer at all: say so where run errors go.
    if (run === shown) shown.say(`${failure}${error.message}`);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  applyTheme();
  systemDark.addEventListener("change", applyTheme);
  $("theme").addEventListener("click", toggleTheme);
  if (apiKey()) showKeyState("key saved in this browser");
  else {
    showKeyState("no key yet");
    showNoKey("Every call to genstream carries an API key, and this browser has none yet.");
  }
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("api-key").value.trim();
    if (key) saveKey(key);
  });
  $("spec-form").addEventListener("submit", startRun);
  $("cancel").addEventListener("click", async () => {
    if (!run) return;
    const shown = run;
    try {
      await api("POST", `/api/generations/${shown.id}/cancel`);
    } catch (error) {
      if (run === shown) shown.say(`Could not cancel: ${error.message}`);
    }
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
      if (run === shown) shown.say(`Could not retry: ${error.message}`);
    }
  });
  $("zip").addEventListener("click", downloadZip);
  $("refresh").addEventListener("click", listGenerations);
  window.addEventListener("hashchange", route);
  listGenerations();
  followEveryRun();
  route();
});
