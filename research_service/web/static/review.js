// @ts-check
/**
 * Plan review: the card that shows a plan waiting for a decision (edit, remove or add queries,
 * approve them, or re-plan with feedback) with its countdown, and what became of the plan.
 * @module review
 */

import { ApiError, decidePlan, getRun } from "./api.js";
import { byId, el, isolated, num, obj, plural, setSentence, str } from "./dom.js";

/** The service takes 1 to 8 queries of at most 200 characters each (docs/api.md). */
const MAX_QUERIES = 8;
const MAX_QUERY_CHARS = 200;
/** The end of the problem type of a decision the run does not wait for (a replay server's
 * refusal is a 409 too, and is shown as it is). */
const NOT_AWAITING = "/not-awaiting-review";
/** How often the countdown is redrawn: often enough that it never shows a second twice. */
const TICK_MS = 250;

/** @typedef {"approved" | "edited" | "feedback"} DecisionKind */
/** @typedef {{round: number, kind: DecisionKind, feedback: string}} Reviewed */
/** @typedef {import("./dom.js").Sentence} Sentence */

/**
 * What a decision did, said to a viewer who did not make it.
 * @param {DecisionKind} kind
 * @param {string} feedback
 * @returns {(string | Node)[]}
 */
function byReviewer(kind, feedback) {
  if (kind === "approved") return ["Plan approved by a reviewer."];
  if (kind === "edited") return ["Plan edited by a reviewer."];
  return ["Plan sent back by a reviewer, re-planning with their feedback: “", isolated(feedback), "”"];
}

/**
 * A sentence whose nodes can go elsewhere while the original stays where it is.
 * @param {Sentence} text
 * @returns {Sentence}
 */
function copyOf(text) {
  return typeof text === "string" ? text : text.map((part) => (typeof part === "string" ? part : part.cloneNode(true)));
}

/**
 * What this page's own decision did.
 * @param {DecisionKind} kind
 * @returns {string}
 */
function byYou(kind) {
  if (kind === "approved") return "You approved the plan.";
  if (kind === "edited") return "You edited the plan.";
  return "Re-planning with your feedback…";
}

/**
 * @param {string} value
 * @returns {DecisionKind}
 */
function decisionKind(value) {
  return value === "edited" || value === "feedback" ? value : "approved";
}

/**
 * The outcome of a review as the planning step shows it, or "" when the run had none.
 * @param {string} review `planning` `completed`'s `review`: approved, edited or timed_out
 * @param {number} count the queries the run goes on with
 * @returns {string}
 */
export function reviewOutcome(review, count) {
  const queries = plural(count, "query");
  if (review === "approved") return `Plan approved: ${queries}`;
  if (review === "edited") return `Plan edited: ${queries}`;
  if (review === "timed_out") return `Review timed out: went on with the proposed plan (${queries})`;
  return "";
}

/**
 * "m:ss" for a countdown.
 * @param {number} seconds
 * @returns {string}
 */
function clock(seconds) {
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
}

/** The review card of the run on show, and the line that says how its review ended. */
export class PlanReview {
  /** @param {{announce: (text: Sentence) => void}} hooks */
  constructor(hooks) {
    this.hooks = hooks;
    this.card = byId("review");
    this.title = byId("review-title");
    this.countdown = byId("review-countdown");
    this.list = byId("review-queries", HTMLOListElement);
    this.add = byId("review-add", HTMLButtonElement);
    this.approve = byId("review-approve", HTMLButtonElement);
    this.replan = byId("review-replan");
    this.last = byId("review-last");
    this.feedback = byId("review-feedback", HTMLTextAreaElement);
    this.sendFeedback = byId("review-send-feedback", HTMLButtonElement);
    this.error = byId("review-error");
    this.outcome = byId("review-outcome");
    this.runId = "";
    /** The round on show (or last shown); its proposed queries. */
    this.round = 0;
    /** @type {string[]} */
    this.proposed = [];
    /** The decision this page has sent and not heard back about, and the last round it won. */
    /** @type {{round: number, kind: DecisionKind} | null} */
    this.sending = null;
    this.mine = 0;
    /** @type {Reviewed | null} */
    this.lastReviewed = null;
    this.busy = false;
    this.expired = false;
    this.focusWasInCard = false;
    this.leftoverFocus = false;
    this.rows = 0;
    this.deadline = 0;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.timer = undefined;
    this.add.addEventListener("click", () => this.addQuery("", true));
    this.approve.addEventListener("click", () => void this.onApprove());
    this.sendFeedback.addEventListener("click", () => void this.onFeedback());
  }

  /**
   * Forget the previous run's review.
   * @param {string} runId
   */
  reset(runId) {
    this.hide();
    this.runId = runId;
    this.round = 0;
    this.sending = null;
    this.mine = 0;
    this.lastReviewed = null;
    this.outcome.hidden = true;
    this.outcome.textContent = "";
  }

  /**
   * A plan waits for review (`planning` `review`): a new card, even over an earlier round's.
   * @param {Record<string, unknown>} data
   */
  show(data) {
    const round = num(data, "round") ?? 1;
    // The same round again (a reconnect replays its event): keep the card as the user left it.
    if (round === this.round && !this.card.hidden) return;
    const queries = (Array.isArray(data.queries) ? data.queries : []).filter(
      (query) => typeof query === "string",
    );
    // Focus still on an earlier round's controls (its answer was still on its way when this
    // round came: a re-plan can be that quick) belongs to that round: it moves to this card.
    this.leftoverFocus = this.round > 0 && this.card.contains(document.activeElement);
    this.round = round;
    this.proposed = queries;
    this.sending = null;
    this.focusWasInCard = false;
    this.title.textContent = round > 1 ? `Review the new plan (round ${round})` : "Review the plan";
    this.list.replaceChildren();
    for (const query of queries) this.addQuery(query, false);
    this.feedback.value = "";
    const feedbackAllowed = data.feedback_allowed !== false;
    this.replan.hidden = !feedbackAllowed;
    this.last.hidden = feedbackAllowed;
    this.setError("");
    this.expired = false;
    this.setBusy(false, "approved");
    this.outcome.hidden = true;
    this.card.hidden = false;
    this.startCountdown(num(data, "expires_in_s"));
    this.hooks.announce(
      `The plan is ready for review: ${plural(queries.length, "query")}. The run waits for a decision.`,
    );
    void this.confirm(round);
  }

  /**
   * The event may be a replay (a viewer who joined late, a reload): the run's snapshot says
   * whether it still waits for this round and how long it will, and only then is focus moved.
   * @param {number} round
   */
  async confirm(round) {
    const runId = this.runId;
    /** @type {Record<string, unknown> | null} */
    let review = null;
    let known = true;
    try {
      const snapshot = await getRun(runId);
      if (snapshot.awaiting === "plan_review") review = obj(snapshot.review);
    } catch {
      known = false; // keep the event's countdown
    }
    if (runId !== this.runId || round !== this.round || this.card.hidden) return;
    if (review !== null && num(review, "round") === round) {
      this.startCountdown(num(review, "expires_in_s"));
    } else if (known) {
      return; // decided already: the stream's next events say how
    }
    if (this.leftoverFocus || !this.card.contains(document.activeElement)) this.card.focus();
    this.leftoverFocus = false;
  }

  /**
   * A round was decided (`planning` `reviewed`), by this page or by another viewer.
   * @param {Record<string, unknown>} data
   */
  reviewed(data) {
    const round = num(data, "round") ?? this.round;
    const kind = decisionKind(str(data, "decision"));
    this.lastReviewed = { round, kind, feedback: str(data, "feedback") };
    if (this.mine === round) return; // this page's answer has said so already
    if (this.sending?.round === round) {
      // Ours or another's: the answer to our request tells, and says so then.
      if (round === this.round) this.hide();
      return;
    }
    this.settle(round, byReviewer(kind, str(data, "feedback")));
  }

  /**
   * Planning completed: no card any more; after a timeout, say the run went on without one.
   * @param {string} review
   */
  completed(review) {
    if (review === "timed_out") {
      this.settle(this.round, "Review timed out: went on with the proposed plan.", false);
    } else {
      this.hide();
    }
  }

  /** The run ended (cancelled while waiting, say): nothing is left to decide. */
  ended() {
    this.hide();
  }

  hide() {
    this.card.hidden = true;
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /**
   * Close the round's card and say how the review went; focus follows if it was on the card.
   * @param {number} round
   * @param {Sentence} text
   * @param {boolean} [announce]
   */
  settle(round, text, announce = true) {
    const hadFocus = this.focusWasInCard || this.card.contains(document.activeElement);
    this.focusWasInCard = false;
    if (round === this.round) this.hide();
    // The status line gets its own copy of the sentence's nodes: a node lives in one place.
    if (announce) this.hooks.announce(copyOf(text));
    setSentence(this.outcome, text);
    this.outcome.hidden = false;
    if (hadFocus) this.outcome.focus();
  }

  /**
   * One query row: its labelled input and its Remove button.
   * @param {string} text
   * @param {boolean} focus
   */
  addQuery(text, focus) {
    if (this.list.children.length >= MAX_QUERIES) return;
    this.rows += 1;
    const id = `review-query-${this.rows}`;
    const item = el("li", "review-query");
    const label = /** @type {HTMLLabelElement} */ (el("label", "visually-hidden"));
    label.htmlFor = id;
    const input = document.createElement("input");
    input.type = "text";
    input.id = id;
    input.className = "review-input";
    input.maxLength = MAX_QUERY_CHARS;
    input.autocomplete = "off";
    input.value = text;
    const remove = /** @type {HTMLButtonElement} */ (el("button", "button secondary review-remove", "Remove"));
    remove.type = "button";
    remove.addEventListener("click", () => this.removeQuery(item));
    const row = el("div", "review-row");
    row.append(input, remove);
    item.append(label, row);
    this.list.append(item);
    this.renumber();
    if (focus) input.focus();
  }

  /**
   * Take a query off the plan; focus goes to the next query, else the previous, else Add.
   * @param {HTMLElement} item
   */
  removeQuery(item) {
    const neighbour = item.nextElementSibling ?? item.previousElementSibling;
    item.remove();
    this.renumber();
    const input = neighbour?.querySelector("input");
    (input ?? this.add).focus();
  }

  /** Labels follow the order: "Query 2", "Remove query 2". */
  renumber() {
    [...this.list.children].forEach((item, index) => {
      const label = item.querySelector("label");
      const remove = item.querySelector("button");
      if (label) label.textContent = `Query ${index + 1}`;
      remove?.setAttribute("aria-label", `Remove query ${index + 1}`);
    });
    this.sync();
  }

  /** The queries as edited: trimmed, without blanks and repeats, in order. */
  edited() {
    const inputs = [...this.list.querySelectorAll("input")];
    return [...new Set(inputs.map((input) => input.value.trim()).filter(Boolean))];
  }

  async onApprove() {
    const queries = this.edited();
    if (queries.length === 0) {
      this.setError("Keep at least one query (or add one) before approving.");
      this.add.focus();
      return;
    }
    const same =
      queries.length === this.proposed.length && queries.every((q, i) => q === this.proposed[i]);
    await this.decide(same ? {} : { queries }, same ? "approved" : "edited");
  }

  async onFeedback() {
    const feedback = this.feedback.value.trim();
    if (!feedback) {
      this.setError("Write what the new plan should do differently first.");
      this.feedback.focus();
      return;
    }
    await this.decide({ feedback }, "feedback");
  }

  /**
   * Send the decision. The first decision of a round wins; a 409 means another was first (or
   * the wait ended), which is news to show, not an error.
   * @param {{queries?: string[], feedback?: string}} body
   * @param {DecisionKind} kind
   */
  async decide(body, kind) {
    const round = this.round;
    const runId = this.runId;
    this.focusWasInCard = this.card.contains(document.activeElement);
    this.sending = { round, kind };
    this.setError("");
    this.setBusy(true, kind);
    // A later round on show already says what came of this one (a re-plan can be that quick).
    const moved = () => runId !== this.runId || round !== this.round;
    try {
      // Named, the round is decided only while it is open: never one this card has not shown.
      await decidePlan(runId, { ...body, round });
      if (moved()) return;
      this.sending = null;
      this.mine = round;
      this.settle(round, byYou(kind));
    } catch (error) {
      if (moved()) return;
      this.sending = null;
      if (error instanceof ApiError && error.status === 409 && error.type.endsWith(NOT_AWAITING)) {
        const first = this.lastReviewed?.round === round ? this.lastReviewed : null;
        this.settle(
          round,
          first
            ? ["Another reviewer decided first. ", ...byReviewer(first.kind, first.feedback)]
            : "The plan no longer waits for a review: another reviewer decided first, or the time to decide ran out. The run's progress shows what it does now.",
        );
        return;
      }
      this.focusWasInCard = false;
      this.setBusy(false, kind);
      // A 401 has brought the sign-in card, which says why.
      if (error instanceof ApiError && error.status === 401) return;
      const detail = error instanceof ApiError ? error.detail : String(error);
      this.setError(`Could not send the decision: ${detail}`);
    }
  }

  /**
   * @param {boolean} busy
   * @param {DecisionKind} kind
   */
  setBusy(busy, kind) {
    this.busy = busy;
    this.approve.textContent = busy && kind !== "feedback" ? "Sending…" : "Approve";
    this.sendFeedback.textContent = busy && kind === "feedback" ? "Sending…" : "Re-plan with feedback";
    this.sync();
  }

  /** Buttons are off while a decision is out or after the time to decide ran out. */
  sync() {
    const off = this.busy || this.expired;
    this.approve.disabled = off;
    this.sendFeedback.disabled = off;
    this.add.disabled = off || this.list.children.length >= MAX_QUERIES;
    for (const remove of this.list.querySelectorAll("button")) remove.disabled = off;
  }

  /** @param {string} message */
  setError(message) {
    this.error.textContent = message;
    this.error.hidden = !message;
  }

  /** @param {number | null} seconds */
  startCountdown(seconds) {
    clearInterval(this.timer);
    this.timer = undefined;
    if (seconds === null) {
      this.countdown.textContent = "";
      return;
    }
    this.deadline = Date.now() + seconds * 1000;
    this.tick();
    if (!this.expired) this.timer = setInterval(() => this.tick(), TICK_MS);
  }

  tick() {
    const left = Math.max(0, Math.ceil((this.deadline - Date.now()) / 1000));
    if (left > 0) {
      this.countdown.textContent = `Time left to decide: ${clock(left)}`;
      return;
    }
    this.countdown.textContent = "Time is up: the run goes on with the proposed plan.";
    clearInterval(this.timer);
    this.timer = undefined;
    this.expired = true;
    this.sync();
  }
}
