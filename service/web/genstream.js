/**
 * genstream.js: follow one generation of a genstream service from any web page, and get each
 * of its events exactly once, in seq order, across dropped connections, server restarts,
 * expired stream tokens and silent stalls. An ES module: no dependencies, no build step.
 *
 *   import { follow } from "/static/genstream.js";
 *   const run = follow(generationId, { apiKey });
 *   run.addEventListener("event", (e) => render(e.detail));       // seq after+1 .. N, in order
 *   run.addEventListener("state", (e) => show(e.detail.state));    // see "state" below
 *   const last = await run.done;   // the terminal event
 *   run.close();                   // stop early
 *
 *   for await (const event of follow(generationId, { apiKey })) render(event);
 *
 * follow(generationId, options) returns a Follow. Options:
 *   apiKey   the caller's API key (required): it fetches stream tokens and missing events
 *   after    the last seq the caller already has (0, the default: from the start)
 *   token    a stream token in hand (POST /api/generations returns one) for the first
 *            connection; later connections fetch their own
 *   baseUrl  where the service answers ("": this page's origin)
 *   pace     "recorded": replay a finished generation at the pace it was recorded, `speed`
 *            times faster (1, from 0.01 to 100)
 *   stallMs  how long a silence may last before the log is asked whether the stream has
 *            stalled (30000, one small request per silence; 0: never)
 *   retryMs  the first step of the back-off when the module reconnects by itself (2000)
 *   snapshot true: start from the run's snapshot instead of its events (with `after` 0 only):
 *            a 100,000-event run arrives as one "snapshot" and the events after it
 *
 * A Follow is an EventTarget. It starts on a microtask, so listeners added before the caller
 * next awaits see every event and every state:
 *   "snapshot" detail: the run reduced up to its seq (docs/CONTRACT.md, "Snapshot + tail"),
 *            once, before any "event", when `snapshot` was asked for; a run that had ended
 *            is then done, with the snapshot's last_event as the terminal event.
 *   "event"  detail: one event as docs/CONTRACT.md shapes it; each seq once, none skipped, in
 *            order, the terminal event (generation.succeeded|failed|cancelled) last (a run
 *            retried after it failed goes on through generation.retried to its next end).
 *   "state"  detail: {state, attempt, reason}, state one of
 *              connecting    asking for a token, opening the stream
 *              live          the stream is open
 *              reconnecting  it dropped or was refused; `attempt` counts, `reason` says why
 *              done          the terminal event was delivered (also in detail.event)
 *              error         the service refused for good (detail.error, a FollowError)
 *              closed        close() was called
 * Properties: state, lastSeq (the last delivered seq), done: a Promise of the terminal event
 * that rejects with a FollowError (the service's status and `detail`) or, after close(), an
 * AbortError. Iterating yields the events delivered from then on, ends after the terminal
 * event, throws the FollowError; leaving the loop early closes the follow.
 *
 * How it resumes. Every event goes through one gate: a seq already delivered is dropped, one
 * past a gap waits while the gap is read from GET /api/generations/{id}/events?after=N.
 * The stream is the browser's EventSource, opened with a stream token and ?after=lastSeq.
 * - A dropped connection: the browser reconnects by itself, sending Last-Event-ID, after the
 *   server's `retry:` hint. The module leaves that alone: only the browser can read the hint.
 * - A refused one (EventSource gives up on any answer but 200: 204 after the end, 401 for an
 *   expired token, 404, 429, 503): the module reads the log after lastSeq (which finds the
 *   terminal event, or the refusal's reason with the API key), takes a fresh token and opens a
 *   new stream, after a back-off doubling from retryMs to 30 s, with jitter (so the clients of
 *   a restarted server do not return in step), or a refused request's Retry-After if longer.
 * - A stall: keepalive comments are invisible to EventSource, so silence cannot tell a dead
 *   connection from an idle run. After stallMs with no event and no open, the module reads the
 *   log instead: if the log is ahead of what the stream delivered, it delivers those events and
 *   reopens the stream; if not, the run is merely quiet and the stream is kept. Not in a
 *   replay, whose log is always ahead of its paced stream.
 * A 4xx answer other than 408 and 429 to the token or events request (401, 403, 404, 400)
 * ends the follow: `error`, and `done` rejects. Anything else (5xx, no answer) is retried.
 *
 * The chain. Each event carries `chain`, SHA-256 of the previous event's chain and its own
 * text without that member (docs/CONTRACT.md). Every event delivered, from the stream or the
 * log, must follow the chain of those before it, and a terminal event's count and chain_hash
 * must match what came: else the follow ends with `error`, "incomplete or altered: ...".
 * Following from `after` > 0, the first event is taken on trust. Hashing needs crypto.subtle,
 * which browsers give secure contexts only (https, or localhost): elsewhere the chain is not
 * checked.
 */

const TYPES = [
  "generation.queued", "generation.started", "generation.resumed", "generation.stalled",
  "generation.retried",
  "phase.started",
  "llm.delta", "llm.retrying", "llm.waiting", "file.saved", "phase.completed", "check.completed",
  "generation.succeeded", "generation.failed", "generation.cancelled",
];
const TERMINAL = new Set(["generation.succeeded", "generation.failed", "generation.cancelled"]);
const PAGE = 1000; // events per read of the log, the endpoint's most
const BACKOFF_CAP_MS = 30_000;
const ZERO_CHAIN = "0".repeat(64);
const CHAIN_MEMBER = ',"chain":';
const utf8 = new TextEncoder();

const HEX = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, "0"));
const nibble = (code) => (code <= 57 ? code - 48 : (code | 32) - 87); // "0"-"9", "a"-"f"

/** The chain of an event with this JSON text when `previous` comes before it (hex). Once per
 * event on a long run: the hex is converted by table, not by parseInt and padStart (which
 * cost 0.1 ms an event, a tenth of the page's time on a 10,000-event run). */
async function chainOf(previous, text) {
  const cut = text.lastIndexOf(CHAIN_MEMBER);
  const body = utf8.encode(cut >= 0 ? `${text.slice(0, cut)}}` : text);
  const bytes = new Uint8Array(32 + body.length);
  for (let i = 0; i < 32; i += 1) {
    bytes[i] = (nibble(previous.charCodeAt(2 * i)) << 4) | nibble(previous.charCodeAt(2 * i + 1));
  }
  bytes.set(body, 32);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  let hex = "";
  for (const byte of digest) hex += HEX[byte];
  return hex;
}

/** The text of each event of an events page, as the server wrote it ([] if laid out else). */
function eventTexts(text) {
  const prefix = '{"events":[';
  if (!text.startsWith(prefix)) return [];
  const items = [];
  let depth = 0, quoted = false, escaped = false, begin = prefix.length;
  for (let i = begin; i < text.length; i += 1) {
    const c = text[i];
    if (quoted) {
      if (escaped) escaped = false;
      else if (c === "\\") escaped = true;
      else if (c === '"') quoted = false;
    } else if (c === '"') quoted = true;
    else if (c === "{" || c === "[") depth += 1;
    else if (c === "," && depth === 0) { items.push(text.slice(begin, i)); begin = i + 1; }
    else if (c === "}" || c === "]") {
      if (depth === 0) return i > begin ? [...items, text.slice(begin, i)] : items;
      depth -= 1;
    }
  }
  return [];
}

/** Why `event` (its JSON `text`) does not follow `previous`, the chain of the event before
 * it; null when it does, or when that cannot be told (no chain yet, no text, no hashing). */
async function chainBreak(previous, event, text) {
  if (previous === null || text === null || !globalThis.crypto?.subtle) return null;
  if (await chainOf(previous, text) !== event.chain) {
    return `incomplete or altered: seq ${event.seq} does not follow the events before it`;
  }
  const data = event.data || {};
  if (TERMINAL.has(event.type) && "chain_hash" in data
      && (data.count !== event.seq || data.chain_hash !== previous)) {
    return `incomplete or altered: the terminal event says ${data.count} events, `
      + `and ${event.seq} came`;
  }
  return null;
}

/** The service refused: `status` and its `detail`; `fatal` when asking again cannot help. */
export class FollowError extends Error {
  constructor(status, detail, retryAfterMs = 0) {
    super(detail);
    this.name = "FollowError";
    this.status = status;
    this.detail = detail;
    this.retryAfterMs = retryAfterMs;
  }

  get fatal() {
    return this.status >= 400 && this.status < 500 && this.status !== 408 && this.status !== 429;
  }

  static async of(response) {
    let detail = `${response.status} ${response.statusText}`.trim();
    try {
      const body = await response.json();
      if (body && typeof body.detail === "string") detail = body.detail;
    } catch { /* not JSON: the status line says it */ }
    const seconds = Number(response.headers.get("Retry-After")); // null -> 0, a date -> NaN
    return new FollowError(response.status, detail, Number.isFinite(seconds) ? seconds * 1000 : 0);
  }
}

/** Follow one generation: see the module's header. */
export function follow(generationId, options) {
  return new Follow(generationId, options);
}

export class Follow extends EventTarget {
  #id; #apiKey; #base; #pace; #stallMs; #retryMs; #snapshot; // still wanted
  #lastSeq; #lastEvent = null; #pending = new Map(); // seq -> [event, its text] awaiting a gap
  #chain; #delivery = Promise.resolve(); // the chain so far; deliveries, one after another
  #token; #source = null; #streamSeq = 0; // the highest seq the open stream has sent
  #state = "connecting"; #attempt = 0; #ended = false; #error = null;
  #reading = null; #gapRetry = 0; #watch = 0; #heard = 0; #retry = 0; #settle;

  constructor(generationId, {
    apiKey, after = 0, token = null, baseUrl = "", pace = "live", speed = 1,
    stallMs = 30_000, retryMs = 2_000, snapshot = false,
  } = {}) {
    super();
    if (!apiKey) throw new TypeError("follow() needs options.apiKey");
    if (!Number.isSafeInteger(after) || after < 0) throw new TypeError("after: a seq, 0 or more");
    this.#id = encodeURIComponent(generationId);
    this.#apiKey = apiKey;
    this.#base = baseUrl.replace(/\/+$/, "");
    this.#pace = pace === "recorded" ? `&pace=recorded&speed=${encodeURIComponent(speed)}` : "";
    this.#stallMs = stallMs;
    this.#retryMs = retryMs;
    this.#lastSeq = after;
    this.#snapshot = Boolean(snapshot) && after === 0;
    this.#chain = after === 0 ? ZERO_CHAIN : null;
    this.#token = token;
    this.done = new Promise((resolve, reject) => { this.#settle = { resolve, reject }; });
    this.done.catch(() => {}); // unawaited, a refusal is a state, not an unhandled rejection
    queueMicrotask(() => { // after the caller's listeners are attached
      if (this.#ended) return;
      this.#setState("connecting");
      this.#open();
    });
  }

  get state() { return this.#state; }
  get lastSeq() { return this.#lastSeq; }

  close() {
    if (this.#ended) return;
    this.#end();
    this.#setState("closed");
    this.#settle.reject(new DOMException("close() was called before the end", "AbortError"));
  }

  [Symbol.asyncIterator]() {
    // Listen now, not at the first next(): an event may arrive before the loop asks.
    const queue = [];
    let wake = () => {};
    const onEvent = (e) => { queue.push(e.detail); wake(); };
    const onState = () => wake();
    this.addEventListener("event", onEvent);
    this.addEventListener("state", onState);
    const self = this;
    return (async function* events() {
      try {
        for (;;) {
          while (queue.length) yield queue.shift();
          if (self.#state === "error") throw self.#error;
          if (self.#state === "done" || self.#state === "closed") return;
          await new Promise((resolve) => { wake = resolve; });
        }
      } finally {
        self.removeEventListener("event", onEvent);
        self.removeEventListener("state", onState);
        self.close(); // a loop left early stops following; after the end, a no-op
      }
    })();
  }

  // The stream, with the token in hand or a fresh one.
  async #open() {
    try {
      this.#token ??= (await this.#request("POST", "/stream-token")).stream_token;
      if (!this.#ended) this.#listen();
    } catch (error) {
      this.#trouble(error);
    }
  }

  #listen() {
    this.#source?.close();
    const url = `${this.#base}/api/generations/${this.#id}/stream`
      + `?token=${encodeURIComponent(this.#token)}&after=${this.#lastSeq}${this.#pace}`
      + (this.#snapshot ? "&snapshot=1" : "");
    const source = new EventSource(url);
    this.#source = source;
    this.#streamSeq = this.#lastSeq;
    source.onopen = () => {
      this.#attempt = 0;
      this.#arm();
      this.#setState("live");
    };
    source.onerror = () => {
      if (this.#source !== source) return;
      // After a terminal event the server closes the stream: whether the log goes on (a
      // retried run) is being asked of the log, which decides how this follow ends.
      if (this.#lastEvent && TERMINAL.has(this.#lastEvent.type)) return;
      if (source.readyState === EventSource.CONNECTING) {
        // Dropped: the browser reconnects after the server's retry hint, with Last-Event-ID.
        this.#attempt += 1;
        this.#setState("reconnecting", "connection lost");
      } else {
        // Refused, and EventSource hides why: the token may have expired, so drop it.
        source.close();
        this.#source = null;
        this.#token = null;
        this.#trouble(new Error("the stream was refused"));
      }
    };
    const onMessage = (message) => {
      if (this.#source !== source || !message.data) return;
      const event = JSON.parse(message.data);
      this.#streamSeq = Math.max(this.#streamSeq, event.seq);
      this.#arm();
      this.#accept(event, message.data);
    };
    for (const type of [...TYPES, "message"]) source.addEventListener(type, onMessage);
    source.addEventListener("snapshot", (message) => {
      if (this.#source !== source) return;
      const snapshot = JSON.parse(message.data);
      this.#streamSeq = Math.max(this.#streamSeq, snapshot.seq);
      this.#arm();
      this.#takeSnapshot(snapshot);
    });
    this.#arm();
  }

  // The run up to snapshot.seq, in place of its events: delivered first, the chain kept from
  // its last event's; a snapshot that ends with the terminal event ends the follow.
  #takeSnapshot(snapshot) {
    if (this.#ended || !this.#snapshot || this.#lastSeq !== 0) return;
    this.#snapshot = false;
    this.#lastSeq = snapshot.seq;
    this.#lastEvent = snapshot.last_event;
    for (const seq of this.#pending.keys()) if (seq <= snapshot.seq) this.#pending.delete(seq);
    this.#delivery = this.#delivery.then(() => {
      if (this.#ended) return;
      this.#chain = snapshot.chain;
      this.dispatchEvent(new CustomEvent("snapshot", { detail: snapshot }));
      if (TERMINAL.has(snapshot.last_event.type)) this.#finish(snapshot.last_event);
    });
    if (!TERMINAL.has(snapshot.last_event.type)) this.#drain();
  }

  // The one gate every event goes through, from the stream or the log, in any order; `text`
  // is its JSON as the server wrote it (null: unknown, its chain then unchecked).
  #accept(event, text) {
    if (this.#ended || event.seq <= this.#lastSeq || this.#pending.has(event.seq)) return;
    this.#pending.set(event.seq, [event, text]);
    this.#drain();
  }

  // Deliver what is pending from lastSeq + 1 on; read the log for a gap before the rest.
  #drain() {
    while (!this.#ended && this.#pending.has(this.#lastSeq + 1)) {
      const [next, nextText] = this.#pending.get(this.#lastSeq + 1);
      this.#pending.delete(next.seq);
      this.#lastSeq = next.seq;
      this.#lastEvent = next;
      this.#deliver(next, nextText);
      if (TERMINAL.has(next.type)) break; // nothing follows a terminal event
    }
    if (!this.#ended && this.#pending.size) this.#fillGap();
  }

  // Hashing is asynchronous: deliveries wait in line, so they keep seq order.
  #deliver(event, text) {
    this.#delivery = this.#delivery.then(async () => {
      const broken = this.#ended ? null : await this.#breaks(event, text);
      if (this.#ended) return;
      if (broken) {
        this.#fail(new FollowError(0, broken));
        return;
      }
      this.dispatchEvent(new CustomEvent("event", { detail: event }));
      if (!TERMINAL.has(event.type)) return;
      if (await this.#goesOn(event)) this.#drain(); // a retried run: its next attempt follows
      else this.#finish(event);
    });
  }

  // Whether the log goes on after this terminal event (generation.retried, when its owner
  // retried the run): asked of the log, once per terminal event; unanswered, it ends here.
  async #goesOn(event) {
    if (this.#lastSeq > event.seq || this.#pending.has(event.seq + 1)) return true;
    try {
      const text = await this.#request("GET", `/events?after=${event.seq}&limit=1`, "text");
      const [next] = JSON.parse(text).events;
      if (!next || this.#ended) return false;
      const [nextText = null] = eventTexts(text);
      if (next.seq > this.#lastSeq) this.#pending.set(next.seq, [next, nextText]);
      return true;
    } catch {
      return false;
    }
  }

  // Why this event does not follow the chain so far, or null when it does (or cannot tell).
  async #breaks(event, text) {
    if (typeof event.chain !== "string") return null; // a server without chain hashes
    const previous = this.#chain;
    this.#chain = event.chain;
    return chainBreak(previous, event, text);
  }

  #fillGap() {
    this.#readLog().catch((error) => error.fatal && this.#fail(error));
  }

  // Every stored event after lastSeq, page by page; one read at a time, shared by its callers.
  // A gap still open when a read ends (it failed, or raced the event's commit) is read again.
  #readLog() {
    this.#reading ??= (async () => {
      for (;;) {
        const asked = this.#snapshot && this.#lastSeq === 0 ? "&snapshot=1" : "";
        const text = await this.#request(
          "GET", `/events?after=${this.#lastSeq}&limit=${PAGE}${asked}`, "text",
        );
        const page = JSON.parse(text);
        if (page.snapshot) this.#takeSnapshot(page.snapshot);
        const before = page.snapshot ? page.snapshot.seq : this.#lastSeq;
        const texts = eventTexts(text);
        page.events.forEach((event, i) => {
          this.#accept(event, texts.length === page.events.length ? texts[i] : null);
        });
        if (this.#ended || (!page.has_more && (!this.#pending.size || this.#lastSeq === before))) {
          return;
        }
      }
    })().finally(() => {
      this.#reading = null;
      if (!this.#ended && this.#pending.size && !this.#gapRetry) {
        this.#gapRetry = setTimeout(() => {
          this.#gapRetry = 0;
          if (this.#pending.size) this.#fillGap();
        }, this.#backoff(1));
      }
    });
    return this.#reading;
  }

  // Something failed: end on a refusal that asking again cannot change, else try again later.
  #trouble(error) {
    if (this.#ended) return;
    if (error.fatal) {
      this.#fail(error);
      return;
    }
    this.#attempt += 1;
    this.#setState("reconnecting", error.message);
    clearTimeout(this.#retry);
    const wait = Math.max(this.#backoff(this.#attempt), error.retryAfterMs || 0);
    this.#retry = setTimeout(() => this.#recover(), wait);
  }

  async #recover() {
    try {
      // The log says what a refused stream cannot: its terminal event (a 204 meant that) or
      // the refusal's reason. Not in a replay: the log would hand over the rest at once.
      if (!this.#pace) await this.#readLog();
      if (!this.#ended && this.#lastEvent === null && this.#lastSeq > 0) await this.#endedBefore();
      if (!this.#ended) await this.#open();
    } catch (error) {
      this.#trouble(error);
    }
  }

  // Asked to resume after the terminal event itself (the stream answers 204 forever): done.
  async #endedBefore() {
    const page = await this.#request("GET", `/events?after=${this.#lastSeq - 1}&limit=1`);
    const [last] = page.events;
    if (last && last.seq === this.#lastSeq && TERMINAL.has(last.type)) this.#finish(last);
  }

  // No event and no open for stallMs: ask the log whether the stream has fallen behind it.
  // Called per event: it notes the time, and one timer at a time checks it when it fires
  // (a clearTimeout and a setTimeout per event cost more than the event's own drawing).
  #arm() {
    this.#heard = performance.now();
    if (!this.#watch && this.#stallMs > 0 && !this.#pace && !this.#ended) {
      this.#watch = setTimeout(() => this.#watched(), this.#stallMs);
    }
  }

  #watched() {
    this.#watch = 0;
    if (this.#ended || this.#pace) return;
    const quiet = performance.now() - this.#heard;
    if (quiet < this.#stallMs) this.#watch = setTimeout(() => this.#watched(), this.#stallMs - quiet);
    else this.#probe();
  }

  async #probe() {
    const source = this.#source;
    if (!source) return; // recovering: the next stream arms the watch again
    try {
      await this.#readLog();
    } catch (error) {
      if (error.fatal) this.#fail(error);
      else this.#arm();
      return;
    }
    if (this.#ended || this.#source !== source) return;
    if (this.#lastSeq > this.#streamSeq) {
      // The log has events this stream never sent: it is stalled, whatever its state says.
      this.#attempt += 1;
      this.#setState("reconnecting", "stalled");
      this.#listen();
    } else {
      this.#arm(); // quiet, not stalled: keep it
    }
  }

  async #request(method, path, as = "json") {
    const response = await fetch(`${this.#base}/api/generations/${this.#id}${path}`, {
      method,
      headers: { Authorization: `Bearer ${this.#apiKey}` },
    });
    if (!response.ok) throw await FollowError.of(response);
    return as === "text" ? response.text() : response.json();
  }

  // Doubling from retryMs, at most 30 s, drawn from its upper half.
  #backoff(attempt) {
    const ceiling = Math.min(BACKOFF_CAP_MS, this.#retryMs * 2 ** Math.min(attempt - 1, 16));
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  #finish(event) {
    if (this.#ended) return; // closed by a listener of this very event
    this.#end();
    this.#setState("done", null, { event });
    this.#settle.resolve(event);
  }

  #fail(error) {
    if (this.#ended) return;
    this.#end();
    this.#error = error;
    this.#setState("error", error.message, { error });
    this.#settle.reject(error);
  }

  #end() {
    this.#ended = true;
    this.#source?.close();
    this.#source = null;
    this.#pending.clear();
    clearTimeout(this.#watch);
    clearTimeout(this.#retry);
    clearTimeout(this.#gapRetry);
  }

  #setState(state, reason = null, extra = {}) {
    this.#state = state;
    const detail = { state, attempt: this.#attempt, reason, ...extra };
    this.dispatchEvent(new CustomEvent("state", { detail }));
  }
}

/**
 * followAll(options): every run of the key's owner on ONE connection (GET /api/stream), so a
 * page may follow any number of runs within the browser's six connections per origin.
 *
 *   const runs = followAll({ apiKey, snapshot: true });
 *   runs.addEventListener("snapshot", (e) => draw(e.detail));   // a run as it stood
 *   runs.addEventListener("event", (e) => update(e.detail));    // per run: seq order, once
 *   runs.addEventListener("state", (e) => show(e.detail.state));
 *
 * Options: apiKey (required), baseUrl, snapshot (unfinished runs start from their snapshots),
 * retryMs (the first step of the back-off after a refusal, 2000). A fresh stream starts with
 * the owner's unfinished runs, then brings every event of every run, new ones included.
 * Events: "snapshot" and "event" (details as follow()'s), "runerror" ({generation_id,
 * reason}: that run's events stopped following its chain; its later events are withheld),
 * "state" ({state, attempt, reason}: connecting, live, reconnecting, error, closed).
 * It resumes by itself: the browser reconnects with the last frame's id (a cursor for every
 * run at once); a refused stream gets a fresh token and reopens after that id; a gap in one
 * run (the server never leaves one) is read from that run's log.
 */
export function followAll(options) {
  return new FollowAll(options);
}

export class FollowAll extends EventTarget {
  #apiKey; #base; #snapshot; #retryMs;
  #runs = new Map(); // generation id -> {lastSeq, chain, broken}
  #cursor = ""; #token = null; #source = null; #refusals = 0;
  #state = "connecting"; #attempt = 0; #ended = false; #retry = 0;
  #delivery = Promise.resolve(); // every frame, one after another (hashing is asynchronous)

  constructor({ apiKey, baseUrl = "", snapshot = false, retryMs = 2_000 } = {}) {
    super();
    if (!apiKey) throw new TypeError("followAll() needs options.apiKey");
    this.#apiKey = apiKey;
    this.#base = baseUrl.replace(/\/+$/, "");
    this.#snapshot = Boolean(snapshot);
    this.#retryMs = retryMs;
    queueMicrotask(() => {
      if (this.#ended) return;
      this.#setState("connecting");
      this.#open();
    });
  }

  get state() { return this.#state; }

  close() {
    if (this.#ended) return;
    this.#ended = true;
    this.#source?.close();
    this.#source = null;
    clearTimeout(this.#retry);
    this.#setState("closed");
  }

  async #open() {
    try {
      this.#token ??= (await this.#fetch("POST", "/api/stream-token")).stream_token;
      if (!this.#ended) this.#listen();
    } catch (error) {
      this.#trouble(error);
    }
  }

  #listen() {
    this.#source?.close();
    const url = `${this.#base}/api/stream?token=${encodeURIComponent(this.#token)}`
      + (this.#snapshot ? "&snapshot=1" : "") + (this.#cursor ? `&after=${this.#cursor}` : "");
    const source = new EventSource(url);
    this.#source = source;
    source.onopen = () => {
      this.#attempt = 0;
      this.#refusals = 0;
      this.#setState("live");
    };
    source.onerror = () => {
      if (this.#source !== source) return;
      if (source.readyState === EventSource.CONNECTING) {
        this.#attempt += 1; // the browser comes back with Last-Event-ID by itself
        this.#setState("reconnecting", "connection lost");
      } else {
        source.close();
        this.#source = null;
        this.#token = null; // it may have expired
        // Refused three times with a fresh token: the cursor itself may be refused (a 400).
        // Start afresh: the unfinished runs come again, and their repeats are dropped.
        this.#refusals += 1;
        if (this.#refusals >= 3) this.#cursor = "";
        this.#trouble(new Error("the stream was refused"));
      }
    };
    const onFrame = (message) => {
      if (this.#source !== source || !message.data) return;
      this.#cursor = message.lastEventId;
      const body = JSON.parse(message.data);
      this.#delivery = this.#delivery.then(() => this.#take(message.type, body, message.data));
    };
    for (const type of [...TYPES, "snapshot", "message"]) source.addEventListener(type, onFrame);
  }

  // One frame, in the order frames came: a snapshot starts a run's state, an event continues
  // it (a repeat is dropped, a gap read from the log first), each checked against the chain.
  async #take(kind, body, text) {
    if (this.#ended) return;
    const id = body.generation_id;
    let run = this.#runs.get(id);
    if (kind === "snapshot") {
      if (run) return;
      this.#runs.set(id, { lastSeq: body.seq, chain: body.chain, broken: false });
      this.dispatchEvent(new CustomEvent("snapshot", { detail: body }));
      return;
    }
    if (!run) {
      // A run met mid-way (a stream resumed with a cursor) is taken from there, on trust.
      run = { lastSeq: body.seq - 1, chain: body.seq === 1 ? ZERO_CHAIN : null, broken: false };
      this.#runs.set(id, run);
    }
    if (run.broken || body.seq <= run.lastSeq) return;
    if (body.seq > run.lastSeq + 1) {
      try {
        await this.#fill(id, run, body.seq);
      } catch {
        return; // the log is unavailable: the chain check of later events says what is missing
      }
    }
    if (body.seq === run.lastSeq + 1) await this.#deliver(id, run, body, text);
  }

  async #fill(id, run, before) {
    while (run.lastSeq < before - 1 && !run.broken && !this.#ended) {
      const path = `/api/generations/${encodeURIComponent(id)}/events?after=${run.lastSeq}&limit=${PAGE}`;
      const text = await this.#fetch("GET", path, "text");
      const page = JSON.parse(text);
      const texts = eventTexts(text);
      if (!page.events.length) return;
      for (const [i, event] of page.events.entries()) {
        if (event.seq >= before) return;
        await this.#deliver(id, run, event, texts.length === page.events.length ? texts[i] : null);
      }
    }
  }

  async #deliver(id, run, event, text) {
    const previous = run.chain;
    run.chain = typeof event.chain === "string" ? event.chain : null;
    run.lastSeq = event.seq;
    const broken = typeof event.chain === "string" ? await chainBreak(previous, event, text) : null;
    if (this.#ended) return;
    if (broken) {
      run.broken = true;
      this.dispatchEvent(new CustomEvent("runerror", { detail: { generation_id: id, reason: broken } }));
      return;
    }
    this.dispatchEvent(new CustomEvent("event", { detail: event }));
  }

  #trouble(error) {
    if (this.#ended) return;
    if (error.fatal) {
      this.#ended = true;
      this.#setState("error", error.message, { error });
      return;
    }
    this.#attempt += 1;
    this.#setState("reconnecting", error.message);
    clearTimeout(this.#retry);
    const ceiling = Math.min(BACKOFF_CAP_MS, this.#retryMs * 2 ** Math.min(this.#attempt - 1, 16));
    const wait = Math.max(ceiling / 2 + Math.random() * (ceiling / 2), error.retryAfterMs || 0);
    this.#retry = setTimeout(() => this.#open(), wait);
  }

  async #fetch(method, path, as = "json") {
    const response = await fetch(`${this.#base}${path}`, {
      method,
      headers: { Authorization: `Bearer ${this.#apiKey}` },
    });
    if (!response.ok) throw await FollowError.of(response);
    return as === "text" ? response.text() : response.json();
  }

  #setState(state, reason = null, extra = {}) {
    this.#state = state;
    const detail = { state, attempt: this.#attempt, reason, ...extra };
    this.dispatchEvent(new CustomEvent("state", { detail }));
  }
}
