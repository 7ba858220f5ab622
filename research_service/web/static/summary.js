// @ts-check
/**
 * The summary shown on `done`: how the run ended, its timings and its token usage.
 * @module summary
 */

import { byId, el, formatCount, formatMs, num, obj, str } from "./dom.js";

/** @type {Record<string, string>} */
const STATUS_LABELS = { completed: "Completed", failed: "Failed", cancelled: "Cancelled" };

/** The run's summary section, filled from its `done` event. */
export class Summary {
  constructor() {
    this.root = byId("summary");
    this.status = byId("summary-status");
    this.notes = byId("summary-notes");
    this.timings = byId("summary-timings");
    this.usage = byId("summary-usage");
  }

  reset() {
    this.root.hidden = true;
    delete this.root.dataset.status;
    for (const part of [this.status, this.notes, this.timings, this.usage]) part.replaceChildren();
  }

  /**
   * Show the `done` event; `withError` false when the run's `error` event already said why.
   * @param {Record<string, unknown>} done
   * @param {boolean} withError
   */
  show(done, withError) {
    const status = str(done, "status");
    const timings = obj(done.timings_ms);
    const usage = obj(done.usage);
    const error = obj(done.error);
    this.reset();
    this.root.dataset.status = status;
    this.status.append(
      el("span", "badge", STATUS_LABELS[status] ?? status),
      el("span", "summary-total", ` in ${formatMs(num(timings, "total"))}`),
    );
    const message = str(error, "message");
    if (withError && status !== "completed" && (message || str(error, "code"))) {
      this.notes.append(el("p", "summary-error", message || str(error, "code")));
    }
    if (done.truncated === true) {
      this.notes.append(
        el("p", "summary-note", "The answer stopped early: the run's token budget ran out."),
      );
    }
    this.rows(this.timings, [
      ["Planning", formatMs(num(timings, "planning"))],
      ["Searching", formatMs(num(timings, "searching"))],
      ["Synthesizing", formatMs(num(timings, "synthesizing"))],
      ["Total", formatMs(num(timings, "total"))],
    ]);
    const estimated = usage.estimated === true ? " (estimated)" : "";
    this.rows(this.usage, [
      ["Prompt tokens", formatCount(num(usage, "prompt_tokens")) + estimated],
      ["Completion tokens", formatCount(num(usage, "completion_tokens")) + estimated],
      ["Token budget", formatCount(num(usage, "budget"))],
    ]);
    this.root.hidden = false;
  }

  /**
   * Fill a description list with label/value rows.
   * @param {HTMLElement} list
   * @param {[string, string][]} rows
   */
  rows(list, rows) {
    for (const [label, value] of rows) {
      const row = el("div", "row");
      row.append(el("dt", "", label), el("dd", "", value));
      list.append(row);
    }
  }
}
