// A run as its events leave it: the page draws from this, never from the events themselves,
// so a run read event by event and a run opened from its snapshot draw the same picture.
// It is service/snapshot.py's Reduction in JavaScript: `RunModel.fromSnapshot(data)` takes
// what the server reduced, `apply(event)` goes on from there; a browser test feeds a run both
// ways and compares them with the server's own snapshot.

export const TERMINAL = {
  "generation.succeeded": "succeeded",
  "generation.failed": "failed",
  "generation.cancelled": "cancelled",
};
export const MARKED = new Set([
  "llm.retrying", "llm.waiting", "generation.stalled", "generation.resumed", "generation.retried",
]);
export const MARKS_MAX = 500; // as service/snapshot.py keeps

// A phase's row: verify and repair rounds each get their own ("verify 2", "repair 1").
export function phaseLabel(phase, round) {
  return phase === "repair" || (phase === "verify" && round > 1) ? `${phase} ${round}` : phase;
}

// The snapshot's phase identity: its name, and for a verify or repair round the round and how
// many times the run had been retried (a retried run verifies again from round 1).
function phaseKey(data, stage, retries) {
  const name = data.phase || stage;
  return "round" in data ? `${name}|${data.round}|${retries}` : `${name}|0|0`;
}

// A phase's outcome in one or two words, and the class that colours it (table and timeline).
export function phaseOutcome(phase, runStatus) {
  if (phase.verification) return phase.verification.ok ? ["passed", "ok"] : ["failed", "failed"];
  if (phase.status === "completed") return ["done", "ok"];
  if (phase.status === "stopped") return runStatus === "failed" ? ["failed", "failed"] : ["stopped", "stopped"];
  const check = phase.checks.at(-1);
  return [check ? `running (${check.step} ${check.ok ? "passed" : "failed"})` : "running", "running"];
}

export class RunModel {
  constructor(id) {
    this.id = id;
    this.phases = new Map(); // phaseKey -> PhaseState, in the order they first started
    this.retries = 0; // generation.retried events so far
    this.current = null; // the phase events are in now
    this.files = new Map(); // path -> FileState, in the order first saved
    this.counts = {};
    this.first = null; // event 1 (or the snapshot's created_at)
    this.last = null; // the latest event's envelope
    this.attempt = 0;
    this.provider = null;
    this.model = null;
    this.verification = null;
    this.error = null;
    this.marks = [];
    this.marksDropped = 0;
    this.through = 0; // seqs a snapshot stood for
  }

  static fromSnapshot(snapshot) {
    const run = new RunModel(snapshot.generation_id);
    run.through = snapshot.seq;
    run.first = { timestamp: snapshot.created_at };
    run.last = snapshot.last_event;
    run.counts = { ...snapshot.counts };
    run.retries = snapshot.counts["generation.retried"] || 0;
    run.attempt = snapshot.attempt;
    run.provider = snapshot.provider;
    run.model = snapshot.model;
    run.verification = snapshot.verification;
    run.error = snapshot.error;
    run.marks = (snapshot.marks || []).slice();
    run.marksDropped = snapshot.marks_dropped || 0;
    for (const phase of snapshot.phases) {
      const state = { checks: [], first_started_at: phase.started_at, retried: 0, ...structuredClone(phase) };
      const key = "round" in phase ? `${phase.phase}|${phase.round}|${state.retried}` : `${phase.phase}|0|0`;
      run.phases.set(key, state);
      if (state.status === "running") run.current = state;
    }
    for (const file of snapshot.files) run.files.set(file.path, { ...file });
    return run;
  }

  get status() { return this.last ? this.last.status : "queued"; }
  get ended() { return Boolean(this.last && this.last.type in TERMINAL); }
  get createdAt() { return this.first ? this.first.timestamp : null; }

  get tokens() {
    let prompt = 0;
    let output = 0;
    for (const phase of this.phases.values()) {
      prompt += phase.prompt_tokens;
      output += phase.output_tokens;
    }
    return { prompt_tokens: prompt, output_tokens: output };
  }

  apply(event) {
    const kind = event.type;
    const data = event.data || {};
    this.first = this.first || event;
    this.last = event;
    this.counts[kind] = (this.counts[kind] || 0) + 1;
    if (kind === "llm.delta") {
      if (this.current) this.current.deltas += 1;
    } else if (kind === "generation.started" || kind === "generation.resumed") {
      this.attempt = data.attempt ?? this.attempt;
      if (kind === "generation.started") {
        this.provider = data.provider;
        this.model = data.model;
      }
    } else if (kind === "phase.started") {
      this.phaseStarted(event, data);
    } else if (kind === "phase.completed") {
      this.phaseCompleted(event, data);
    } else if (kind === "check.completed" && this.current) {
      this.current.checks.push(data);
    } else if (kind === "llm.retrying" && this.current) {
      this.current.retries += 1;
    } else if (kind === "llm.waiting" && this.current) {
      this.current.waits += 1;
    } else if (kind === "file.saved") {
      const known = this.files.get(data.path);
      this.files.set(data.path, {
        path: data.path, size: data.size, sha256: data.sha256, language: data.language,
        seq: event.seq, versions: known ? known.versions + 1 : 1,
      });
    } else if (kind === "generation.retried") {
      this.retries += 1;
      this.error = null;
      this.verification = null;
    }
    if (MARKED.has(kind)) this.mark(event);
    if (kind in TERMINAL) this.ended_(kind, data);
  }

  mark(event) {
    const { seq, type, timestamp, stage, data } = event;
    this.marks.push({ seq, type, timestamp, stage, data: data || {} });
    if (this.marks.length > MARKS_MAX) {
      this.marks.shift();
      this.marksDropped += 1;
    }
  }

  phaseStarted(event, data) {
    const key = phaseKey(data, event.stage, this.retries);
    let phase = this.phases.get(key);
    if (!phase) {
      phase = {
        phase: data.phase || event.stage, number: data.number || 0, of: data.of || 0,
        status: "running", starts: 0, attempt: 0, provider: data.provider || "",
        model: data.model ?? null, started_at: event.timestamp, first_started_at: event.timestamp,
        completed_at: null, duration_ms: null, requests: null, prompt_tokens: 0,
        output_tokens: 0, files: 0, deltas: 0, retries: 0, waits: 0, checks: [],
        retried: this.retries,
      };
      if ("round" in data) phase.round = data.round;
      this.phases.set(key, phase);
    }
    phase.status = "running";
    phase.starts += 1;
    phase.attempt = data.attempt || 0;
    phase.started_at = event.timestamp;
    phase.checks = [];
    this.current = phase;
    if (phase.starts > 1) this.mark(event); // a restart, marked where it happened
  }

  phaseCompleted(event, data) {
    const phase = this.phases.get(phaseKey(data, event.stage, this.retries));
    if (!phase) return;
    Object.assign(phase, {
      status: "completed", completed_at: event.timestamp, duration_ms: data.duration_ms || 0,
      requests: data.attempts || 0, prompt_tokens: data.prompt_tokens || 0,
      output_tokens: data.output_tokens || 0, files: data.files || 0,
      provider: data.provider ?? phase.provider, model: "model" in data ? data.model : phase.model,
    });
    if (data.verification) {
      phase.verification = data.verification;
      this.verification = data.verification;
    }
    if (this.current === phase) this.current = null;
  }

  ended_(kind, data) {
    for (const phase of this.phases.values()) {
      if (phase.status === "running") phase.status = "stopped";
    }
    this.current = null;
    if (data.verification) this.verification = data.verification;
    if (kind === "generation.failed") this.error = data.error ?? null;
  }
}
