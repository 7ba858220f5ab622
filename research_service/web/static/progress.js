// @ts-check
/**
 * The phases stepper (state and timing of planning, searching, synthesizing) and the
 * planned queries with a live status each.
 * @module progress
 */

import { byId, el, formatMs, plural, setSentence } from "./dom.js";

export const PHASES = /** @type {const} */ (["planning", "searching", "synthesizing"]);

/** @typedef {(typeof PHASES)[number]} Phase */
/** @typedef {"pending" | "active" | "done" | "failed" | "stopped" | "skipped"} StepState */

/** @type {Record<StepState, string>} */
const STATE_LABELS = {
  pending: "Waiting",
  active: "In progress",
  done: "Done",
  failed: "Failed",
  stopped: "Stopped",
  skipped: "Not reached",
};

/**
 * @param {unknown} value
 * @returns {value is Phase}
 */
export function isPhase(value) {
  return typeof value === "string" && /** @type {readonly string[]} */ (PHASES).includes(value);
}

/** One step of the stepper: its list item, state, start and end on the run's clock. */
class Step {
  /** @param {HTMLElement} item */
  constructor(item) {
    this.item = item;
    /** @type {HTMLElement} */
    this.stateLabel = /** @type {HTMLElement} */ (item.querySelector(".step-state"));
    /** @type {HTMLElement} */
    this.time = /** @type {HTMLElement} */ (item.querySelector(".step-time"));
    /** @type {HTMLElement} */
    this.detail = /** @type {HTMLElement} */ (item.querySelector(".step-detail"));
    /** @type {HTMLElement} */
    this.note = /** @type {HTMLElement} */ (item.querySelector(".step-note"));
    /** @type {number | null} */
    this.startedMs = null;
    this.reset();
  }

  reset() {
    this.startedMs = null;
    this.set("pending");
    this.time.textContent = "";
    this.detail.textContent = "";
    this.note.textContent = "";
  }

  /** @param {StepState} state */
  set(state) {
    this.state = state;
    this.item.dataset.state = state;
    this.stateLabel.textContent = STATE_LABELS[state];
    if (state === "active") this.item.setAttribute("aria-current", "step");
    else this.item.removeAttribute("aria-current");
  }
}

/** The stepper: one Step per phase, in order. */
export class Stepper {
  constructor() {
    /** @type {Record<Phase, Step>} */
    this.steps = {
      planning: new Step(byId("step-planning")),
      searching: new Step(byId("step-searching")),
      synthesizing: new Step(byId("step-synthesizing")),
    };
  }

  reset() {
    for (const phase of PHASES) this.steps[phase].reset();
  }

  /**
   * A phase started: earlier phases are over even if their `completed` was never seen.
   * @param {Phase} phase
   * @param {number} elapsedMs
   */
  started(phase, elapsedMs) {
    for (const earlier of PHASES.slice(0, PHASES.indexOf(phase))) {
      if (this.steps[earlier].state === "active") this.steps[earlier].set("done");
    }
    const step = this.steps[phase];
    step.startedMs = elapsedMs;
    step.set("active");
    step.time.textContent = "";
  }

  /**
   * @param {Phase} phase
   * @param {number} elapsedMs
   */
  completed(phase, elapsedMs) {
    const step = this.steps[phase];
    step.set("done");
    step.note.textContent = "";
    if (step.startedMs !== null) step.time.textContent = formatMs(elapsedMs - step.startedMs);
  }

  /**
   * @param {Phase} phase
   * @param {import("./dom.js").Sentence} text
   */
  detail(phase, text) {
    setSentence(this.steps[phase].detail, text);
  }

  /**
   * A passing remark on a phase (a retry), cleared by its next progress.
   * @param {Phase} phase
   * @param {import("./dom.js").Sentence} text
   */
  note(phase, text) {
    setSentence(this.steps[phase].note, text);
  }

  /** @param {Phase} phase */
  failed(phase) {
    this.steps[phase].set("failed");
  }

  /**
   * The run ended: authoritative timings, and what the phases that did not finish became.
   * @param {string} status
   * @param {Record<string, unknown>} timings
   */
  ended(status, timings) {
    for (const phase of PHASES) {
      const step = this.steps[phase];
      if (step.state === "active") step.set(status === "failed" ? "failed" : "stopped");
      if (step.state === "pending") step.set("skipped");
      step.note.textContent = "";
      const ms = timings[phase];
      if (step.state !== "skipped" && typeof ms === "number") step.time.textContent = formatMs(ms);
    }
  }
}

/** The planned queries, grouped by search round, each with its live status. */
export class QueryList {
  constructor() {
    this.root = byId("queries");
    /** @type {Map<string, HTMLElement>} */
    this.items = new Map();
    /** @type {Map<number, HTMLElement>} */
    this.rounds = new Map();
  }

  reset() {
    this.root.replaceChildren();
    this.items.clear();
    this.rounds.clear();
  }

  /**
   * The list of a round, created (with its heading) on first use.
   * @param {number} round
   * @returns {HTMLElement}
   */
  round(round) {
    let list = this.rounds.get(round);
    if (list === undefined) {
      const group = el("section", "round");
      const title = round === 1 ? "Round 1 · planned" : `Round ${round} · follow-ups`;
      group.append(el("h3", "round-title", title));
      list = el("ol", "query-list");
      group.append(list);
      this.root.append(group);
      this.rounds.set(round, list);
      this.root.dataset.rounds = String(this.rounds.size);
    }
    return list;
  }

  /**
   * Add a round's queries, all waiting.
   * @param {number} round
   * @param {unknown[]} queries
   */
  plan(round, queries) {
    for (const query of queries) {
      if (typeof query === "string") this.item(round, query);
    }
  }

  /**
   * A round's note (its follow-up planning failed).
   * @param {number} round
   * @param {string} text
   */
  roundNote(round, text) {
    const list = this.round(round);
    list.before(el("p", "round-note", text));
  }

  /**
   * The query's item, added to its round if the plan did not list it.
   * @param {number} round
   * @param {string} query
   * @returns {HTMLElement}
   */
  item(round, query) {
    const key = `${round}\u0000${query}`;
    let item = this.items.get(key);
    if (item === undefined) {
      item = el("li", "query");
      item.dataset.state = "waiting";
      item.append(el("span", "query-text", query), el("span", "query-status", "Waiting"));
      this.round(round).append(item);
      this.items.set(key, item);
    }
    return item;
  }

  /**
   * The round's search started: its waiting queries are now being searched.
   * @param {number} round
   */
  searching(round) {
    for (const item of this.round(round).querySelectorAll(".query")) {
      const query = /** @type {HTMLElement} */ (item);
      if (query.dataset.state === "waiting") this.status(query, "running", "Searching…");
    }
  }

  /**
   * One query finished, with the sources it added or the error it met.
   * @param {number} round
   * @param {string} query
   * @param {number | null} added
   * @param {string} error
   */
  finished(round, query, added, error) {
    const item = this.item(round, query);
    if (error) this.status(item, "failed", `Failed: ${error}`);
    else if (added) this.status(item, "done", plural(added, "new source"));
    else this.status(item, "empty", "No new sources");
  }

  /** Queries never finished when the run ended. */
  ended() {
    for (const item of this.items.values()) {
      if (item.dataset.state === "waiting" || item.dataset.state === "running") {
        this.status(item, "stopped", "Not finished");
      }
    }
  }

  /**
   * @param {HTMLElement} item
   * @param {string} state
   * @param {string} text
   */
  status(item, state, text) {
    item.dataset.state = state;
    const label = /** @type {HTMLElement} */ (item.querySelector(".query-status"));
    label.textContent = text;
  }
}
