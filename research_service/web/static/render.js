// @ts-check
/**
 * The run view: turns each stream event into the stepper, queries, sources, answer and
 * summary, and announces progress (phases and finished queries, never tokens) politely.
 * @module render
 */

import { AnswerWriter } from "./answer.js";
import { byId, formatMs, isolated, num, obj, plural, setSentence, str } from "./dom.js";
import { runLink } from "./paths.js";
import { isPhase, QueryList, Stepper } from "./progress.js";
import { PlanReview, reviewOutcome } from "./review.js";
import { SourceList } from "./sources.js";
import { Summary } from "./summary.js";

/** @typedef {import("./stream.js").ConnectionState} ConnectionState */
/** @typedef {import("./dom.js").Sentence} Sentence */

/** Everything the panel shows about one run. */
export class RunView {
  constructor() {
    this.section = byId("run");
    this.heading = byId("run-question");
    this.share = byId("share-link", HTMLAnchorElement);
    this.statusLine = byId("status");
    this.connection = byId("connection");
    this.failure = byId("run-error");
    this.answerBox = byId("answer");
    this.steps = new Stepper();
    this.queries = new QueryList();
    this.sources = new SourceList();
    this.summary = new Summary();
    this.answer = new AnswerWriter(this.answerBox, (id) => this.sources.title(id));
    this.review = new PlanReview({ announce: (text) => this.announce(text) });
    this.round = 1;
  }

  /**
   * Show a fresh, empty view for a run.
   * @param {string} runId
   * @param {string} question
   */
  reset(runId, question) {
    this.section.hidden = false;
    this.section.dataset.runId = runId;
    delete this.section.dataset.status;
    this.heading.textContent = question;
    this.share.href = runLink(runId);
    this.failure.hidden = true;
    this.failure.textContent = "";
    this.steps.reset();
    this.queries.reset();
    this.sources.reset();
    this.summary.reset();
    this.review.reset(runId);
    this.answer.clear();
    this.answerBox.setAttribute("aria-busy", "false");
    this.answerBox.dataset.placeholder = "The answer appears here once the sources are in.";
    this.round = 1;
    this.connection.textContent = "";
    this.sources.root.dataset.placeholder = "None yet.";
    this.queries.root.dataset.placeholder = "Waiting for the plan…";
    byId("intro").hidden = true;
    byId("skip-link").hidden = false;
    this.announce("Connecting to the run…");
  }

  /** Take the run off the page and forget what it showed (signed out): the intro is back. */
  clear() {
    this.reset("", "");
    this.section.hidden = true;
    delete this.section.dataset.runId;
    this.announce("");
    byId("intro").hidden = false;
    byId("skip-link").hidden = true;
  }

  /**
   * Polite, visible progress text; screen readers read it when it changes.
   * @param {Sentence} text
   */
  announce(text) {
    setSentence(this.statusLine, text);
  }

  /**
   * Show the stream connection's state ("Reconnecting…" until the next event arrives).
   * @param {ConnectionState} state
   */
  connectionState(state) {
    this.connection.dataset.state = state;
    if (state === "reconnecting") this.connection.textContent = "Reconnecting…";
    else if (state === "lost") this.connection.textContent = "Connection lost";
    else this.connection.textContent = "";
    if (state === "lost") {
      this.fail("Lost the connection to the run. Reload the page to pick it up where it stopped.");
    }
  }

  /**
   * Show a run failure or a problem the panel cannot recover from.
   * @param {string} message
   */
  fail(message) {
    this.failure.textContent = message;
    this.failure.hidden = false;
  }

  /**
   * Render one event of the stream contract.
   * @param {string} name
   * @param {Record<string, unknown>} data
   */
  handle(name, data) {
    if (name === "phase") this.phase(data);
    else if (name === "token") this.token(data);
    else if (name === "error") this.runError(data);
    else if (name === "done") this.done(data);
  }

  /** @param {Record<string, unknown>} data */
  token(data) {
    const text = str(data, "text");
    if (!text) return;
    if (!this.answer.text) this.steps.note("synthesizing", ""); // a retry before it worked
    this.answerBox.setAttribute("aria-busy", "true");
    this.answer.append(text);
  }

  /** @param {Record<string, unknown>} data */
  runError(data) {
    const message = str(data, "message") || str(data, "code") || "the run failed";
    const phase = data.phase;
    if (isPhase(phase)) this.steps.failed(phase);
    this.fail(`The run failed: ${message}`);
    this.announce(`The run failed: ${message}`);
  }

  /** @param {Record<string, unknown>} data */
  done(data) {
    const status = str(data, "status");
    // Sources first: an answer written from here (a snapshot's) links its citations to them.
    this.sources.add(data.sources);
    // The stored answer has the last word: after a crash, text the listener saw may be lost.
    if (typeof data.answer === "string" && data.answer !== this.answer.text) {
      this.answer.clear();
      this.answer.append(data.answer);
    }
    this.answer.finish();
    this.review.ended();
    this.answerBox.setAttribute("aria-busy", "false");
    this.steps.ended(status, obj(data.timings_ms));
    this.queries.ended();
    this.summary.show(data, this.failure.hidden);
    this.sources.root.dataset.placeholder = "None.";
    this.queries.root.dataset.placeholder = "None.";
    this.section.dataset.status = status;
    this.answerBox.dataset.placeholder =
      status === "completed" ? "The run finished without an answer." : "No answer was written.";
    const total = formatMs(num(obj(data.timings_ms), "total"));
    if (status === "completed") this.announce(`Completed in ${total}.`);
    else if (status === "cancelled") this.announce(`Cancelled after ${total}.`);
    else this.announce(`Failed after ${total}.`);
  }

  /** @param {Record<string, unknown>} data */
  phase(data) {
    const phase = data.phase;
    const status = str(data, "status");
    const elapsed = num(data, "elapsed_ms") ?? 0;
    if (!isPhase(phase)) return;
    const retrying = obj(data.retrying);
    if (data.retrying !== undefined) {
      const wait = formatMs(num(retrying, "wait_ms"));
      const attempt = num(retrying, "attempt") ?? 2;
      const reason = isolated(str(retrying, "reason") || "Model call failed");
      this.steps.note(phase, [reason, `: attempt ${attempt} in ${wait}`]);
      this.announce(`Retrying the model (attempt ${attempt}) in ${wait}.`);
      return;
    }
    this.steps.note(phase, "");
    if (status === "started") this.steps.started(phase, elapsed);
    if (phase === "planning") this.planning(status, data);
    else if (phase === "searching") this.searching(status, data);
    else this.synthesizing(status, data);
    if (status === "completed") this.steps.completed(phase, elapsed);
  }

  /**
   * @param {string} status
   * @param {Record<string, unknown>} data
   */
  planning(status, data) {
    if (status === "started") {
      this.steps.detail("planning", "Choosing what to search for");
      this.announce("Planning the search…");
      return;
    }
    if (status === "review" || status === "reviewed") {
      this.planReview(status, data);
      return;
    }
    if (status !== "completed") return;
    const queries = Array.isArray(data.queries) ? data.queries : [];
    this.queries.plan(1, queries);
    const fallback = str(data, "fallback");
    const reviewed = reviewOutcome(str(data, "review"), queries.length);
    this.review.completed(str(data, "review"));
    this.steps.detail(
      "planning",
      reviewed ||
        (fallback
          ? ["Searching the question itself (", isolated(fallback), ")"]
          : `${plural(queries.length, "query")} planned`),
    );
    this.announce(reviewed ? `${reviewed}.` : `Planned ${plural(queries.length, "search query")}.`);
  }

  /**
   * The plan waits for a decision (`review`), or one was taken (`reviewed`).
   * @param {"review" | "reviewed"} status
   * @param {Record<string, unknown>} data
   */
  planReview(status, data) {
    const round = num(data, "round") ?? 1;
    if (status === "review") {
      this.review.show(data);
      const what = round > 1 ? `the new plan (round ${round})` : "the plan";
      this.steps.detail("planning", `Waiting for a review of ${what}`);
      return;
    }
    this.review.reviewed(data);
    if (str(data, "decision") === "feedback") {
      this.steps.detail("planning", "Planning again with the reviewer's feedback");
    }
  }

  /**
   * @param {string} status
   * @param {Record<string, unknown>} data
   */
  searching(status, data) {
    const round = num(data, "round") ?? this.round;
    if (status === "started") {
      this.round = round;
      this.queries.searching(round);
      this.steps.detail("searching", `0 of ${plural(num(data, "total") ?? 0, "query")} done`);
      this.announce("Searching…");
    } else if (status === "completed") {
      const rounds = num(data, "rounds") ?? 1;
      const pages = num(data, "pages");
      let text = `${plural(num(data, "sources") ?? 0, "source")} kept`;
      if (rounds > 1) text += ` from ${rounds} rounds`;
      if (pages !== null) text += ` · ${plural(pages, "page")} read`;
      this.steps.detail("searching", text);
      this.announce(`Search finished: ${plural(num(data, "sources") ?? 0, "source")}.`);
    } else if (data.page !== undefined) {
      this.sources.page(obj(data.page));
      this.steps.detail("searching", "Reading the sources' pages");
    } else if (typeof data.query === "string") {
      this.queryFinished(round, data);
    } else if (Array.isArray(data.queries)) {
      this.round = round;
      this.queries.plan(round, data.queries);
      this.queries.searching(round);
      this.steps.detail("searching", `Round ${round}: ${plural(data.queries.length, "follow-up query")}`);
      this.announce(`Round ${round}: searching ${plural(data.queries.length, "follow-up query")}.`);
    } else if (data.error !== undefined) {
      const message = str(data, "error") || "follow-up planning failed";
      this.queries.roundNote(round, `None planned: ${message}`);
      this.announce(["No follow-up round: ", isolated(message), "."]);
    }
  }

  /**
   * One query finished: its status, the sources it added and the step's count.
   * @param {number} round
   * @param {Record<string, unknown>} data
   */
  queryFinished(round, data) {
    const query = str(data, "query");
    const error = str(data, "error");
    const added = Array.isArray(data.sources) ? data.sources.length : 0;
    this.sources.add(data.sources);
    this.queries.finished(round, query, added, error);
    const completed = num(data, "completed") ?? 0;
    const total = num(data, "total") ?? 0;
    const prefix = round > 1 ? `Round ${round}: ` : "";
    this.steps.detail("searching", `${prefix}${completed} of ${plural(total, "query")} done`);
    // The query is the model's text: isolated, it cannot turn the rest of the line around.
    this.announce(
      error
        ? [`Query ${completed} of ${total} failed: “`, isolated(query), "”."]
        : [`Query ${completed} of ${total} done: “`, isolated(query), `”, ${plural(added, "new source")}.`],
    );
  }

  /**
   * @param {string} status
   * @param {Record<string, unknown>} data
   */
  synthesizing(status, data) {
    if (status === "started") {
      const sources = num(data, "sources") ?? 0;
      this.steps.detail("synthesizing", `Writing from ${plural(sources, "source")}`);
      this.answerBox.setAttribute("aria-busy", "true");
      this.answerBox.dataset.placeholder = "Writing…";
      this.announce(`Writing the answer from ${plural(sources, "source")}…`);
    } else if (status === "completed") {
      this.answer.finish();
      this.answerBox.setAttribute("aria-busy", "false");
      const truncated = data.truncated === true;
      this.steps.detail("synthesizing", truncated ? "Stopped at the token budget" : "Answer written");
      this.announce("Answer written.");
    }
  }
}
