// @ts-check
/**
 * One run's event stream: an EventSource that resumes where it left off and never repeats an event.
 * @module stream
 */

import { apiPath } from "./paths.js";

/** The named events of the stream contract (docs/protocol.md). */
export const EVENT_NAMES = /** @type {const} */ (["phase", "token", "error", "done"]);

/** First delay before reopening a stream the browser gave up on, doubled per failed attempt. */
const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 10_000;
/** Attempts before the panel stops and says the connection is lost. */
const MAX_ATTEMPTS = 8;

/**
 * @typedef {"connecting" | "open" | "reconnecting" | "lost" | "closed"} ConnectionState
 * @typedef {(typeof EVENT_NAMES)[number]} EventName
 * @typedef {{
 *   onEvent: (name: EventName, data: Record<string, unknown>, seq: number) => void,
 *   onState: (state: ConnectionState) => void,
 *   onRefused?: () => void,
 * }} StreamHandlers
 */

/**
 * The seq of an event id `<run_id>:<seq>` of this run, or null if the id is not one.
 * @param {string} runId
 * @param {string} eventId
 * @returns {number | null}
 */
export function seqOf(runId, eventId) {
  const match = /^([0-9a-f]{16}):(\d+)$/.exec(eventId);
  return match !== null && match[1] === runId ? Number(match[2]) : null;
}

/** Follows `/v1/runs/{id}/events` until `done`, reconnecting after drops and refusals. */
/** The codes of a run's ending written by another process after a crash. */
const CRASH_ENDINGS = ["interrupted", "worker_lost"];

/**
 * Whether an event is the ending of a run another process ended after a crash.
 * @param {EventName} name
 * @param {Record<string, unknown>} data
 */
export function endsAfterACrash(name, data) {
  const code = name === "done" ? /** @type {Record<string, unknown> | null} */ (data.error)?.code : data.code;
  return (name === "done" || name === "error") && typeof code === "string" && CRASH_ENDINGS.includes(code);
}

export class RunStream {
  /**
   * @param {string} runId
   * @param {StreamHandlers} handlers
   */
  constructor(runId, handlers) {
    this.runId = runId;
    this.handlers = handlers;
    /** The seq and id of the last event handed on; anything at or before it is a repeat. */
    this.lastSeq = 0;
    this.lastId = "";
    /** The names of the crash ending's events handed on (each is handed on once). */
    this.crashEnding = new Set();
    this.finished = false;
    this.attempts = 0;
    /** @type {EventSource | null} */
    this.source = null;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.timer = undefined;
    /** @type {ConnectionState} */
    this.state = "closed";
  }

  /** Open the stream from the start of the run. */
  start() {
    this.setState("connecting");
    this.open();
  }

  /** Stop listening (the run itself goes on); nothing is reported after this. */
  close() {
    this.finished = true;
    clearTimeout(this.timer);
    this.source?.close();
    this.source = null;
  }

  /** @param {ConnectionState} state */
  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.handlers.onState(state);
  }

  /** Open an EventSource; after a refusal it asks for the events after the last one seen. */
  open() {
    let url = apiPath(`v1/runs/${encodeURIComponent(this.runId)}/events`);
    if (this.lastId) url += `?last_event_id=${encodeURIComponent(this.lastId)}`;
    const source = new EventSource(url);
    this.source = source;
    source.addEventListener("open", () => {
      this.attempts = 0;
      this.setState("open");
    });
    for (const name of EVENT_NAMES) {
      source.addEventListener(name, (event) => this.receive(source, name, event));
    }
  }

  /**
   * Hand on one event, or treat a data-less `error` as the connection's own error.
   * @param {EventSource} source
   * @param {EventName} name
   * @param {Event} event
   */
  receive(source, name, event) {
    if (source !== this.source || this.finished) return;
    const hasData = event instanceof MessageEvent && typeof event.data === "string" && event.data !== "";
    if (!hasData) {
      if (name === "error") this.connectionError(source);
      return;
    }
    const message = /** @type {MessageEvent<string>} */ (event);
    let data;
    try {
      data = JSON.parse(message.data);
    } catch {
      return; // Not the contract's JSON: nothing sensible to show.
    }
    this.deliver(name, data, message.lastEventId);
  }

  /**
   * Hand on what a finished run's recording holds beyond what the stream gave: for a stream
   * refused until the run had ended (a proxy's 502s), as if it had come through.
   * @param {Record<string, unknown>[]} recorded `{seq, event, data}` each, in order
   */
  catchUp(recorded) {
    for (const entry of recorded) {
      if (this.finished) return;
      const name = /** @type {EventName} */ (entry.event);
      if (!EVENT_NAMES.includes(name)) continue; // not a name of the contract: not for the page
      this.deliver(name, entry.data, `${this.runId}:${entry.seq}`);
    }
  }

  /**
   * Hand on one event unless it repeats one already handed on.
   * @param {EventName} name
   * @param {unknown} data
   * @param {string} eventId
   */
  deliver(name, data, eventId) {
    if (data === null || typeof data !== "object") return;
    const seq = seqOf(this.runId, eventId);
    if (seq !== null) {
      // Resuming never repeats an event, but a repeat must never repeat answer text either.
      // After a crash the run's ending may come with seqs already seen: events the store
      // lost had them (docs/protocol.md, "After a crash"). It is never a repeat.
      const crashEnding = endsAfterACrash(name, data);
      if (seq <= this.lastSeq && !(crashEnding && !this.crashEnding.has(name))) return;
      if (crashEnding) this.crashEnding.add(name);
      if (seq > this.lastSeq) {
        this.lastSeq = seq;
        this.lastId = eventId;
      }
    }
    this.setState("open");
    if (name === "done") this.close();
    this.handlers.onEvent(name, /** @type {Record<string, unknown>} */ (data), seq ?? this.lastSeq);
    if (name === "done") this.setState("closed");
  }

  /**
   * The browser retries a dropped stream by itself; one it gave up on is reopened here.
   * @param {EventSource} source
   */
  connectionError(source) {
    if (source.readyState === EventSource.CONNECTING) {
      this.setState("reconnecting");
      return;
    }
    // CLOSED: the response was not a 200 event stream (a proxy's 502, a restart's 503, a 401
    // once the session has ended: onRefused lets the panel find out which).
    source.close();
    this.source = null;
    this.handlers.onRefused?.();
    this.attempts += 1;
    if (this.attempts > MAX_ATTEMPTS) {
      this.finished = true;
      this.setState("lost");
      return;
    }
    this.setState("reconnecting");
    const delay = Math.min(FIRST_RETRY_MS * 2 ** (this.attempts - 1), MAX_RETRY_MS);
    // Jitter spreads the reconnects of many panels after a server restart.
    this.timer = setTimeout(() => this.open(), delay * (0.75 + Math.random() * 0.5));
  }
}
