// @ts-check
/**
 * The source cards: number, title (a link only for http and https URLs), host, snippet and
 * whether the page was read.
 * @module sources
 */

import { byId, el, formatCount, hostOf, num, obj, safeHref, str } from "./dom.js";

/** The run's sources by id, each rendered as a card `#source-<id>`. */
export class SourceList {
  constructor() {
    this.root = byId("sources");
    this.count = byId("source-count");
    /** @type {Map<number, {title: string, card: HTMLElement}>} */
    this.sources = new Map();
  }

  reset() {
    this.root.replaceChildren();
    this.sources.clear();
    this.count.textContent = "";
  }

  /**
   * The title of source `id`, "" if it has none, or null if the run has no such source.
   * @param {number} id
   * @returns {string | null}
   */
  title(id) {
    return this.sources.get(id)?.title ?? null;
  }

  /**
   * Add sources from a progress or `done` event; known ids only gain what they lacked.
   * @param {unknown} sources
   */
  add(sources) {
    if (!Array.isArray(sources)) return;
    for (const raw of sources) {
      const source = obj(raw);
      const id = num(source, "id");
      if (id === null || !Number.isInteger(id)) continue;
      const known = this.sources.get(id);
      const card = known?.card ?? this.card(id, source);
      const snippet = str(source, "snippet");
      const body = card.querySelector(".source-body");
      if (snippet && body !== null && !body.querySelector(".source-snippet")) {
        body.insertBefore(el("p", "source-snippet", snippet), body.querySelector(".source-page"));
      }
    }
    this.count.textContent = this.sources.size ? `(${this.sources.size})` : "";
  }

  /**
   * A new card, placed in id order.
   * @param {number} id
   * @param {Record<string, unknown>} source
   * @returns {HTMLElement}
   */
  card(id, source) {
    const url = str(source, "url");
    const title = str(source, "title") || url || `Source ${id}`;
    const card = el("li", "source");
    card.id = `source-${id}`;
    card.tabIndex = -1; // a citation link moves focus here
    const body = el("div", "source-body");
    const href = safeHref(url);
    let heading;
    if (href !== null) {
      heading = el("a", "source-title", title);
      heading.setAttribute("href", href);
      heading.setAttribute("target", "_blank");
      heading.setAttribute("rel", "noopener noreferrer");
      heading.append(el("span", "visually-hidden", " (opens in a new tab)"));
    } else {
      heading = el("span", "source-title", title);
    }
    body.append(heading, el("span", "source-host", hostOf(url)));
    card.append(el("span", "source-id", String(id)), body);
    const after = [...this.sources.entries()].filter(([other]) => other > id).sort(([a], [b]) => a - b);
    if (after.length) after[0][1].card.before(card);
    else this.root.append(card);
    this.sources.set(id, { title: str(source, "title"), card });
    return card;
  }

  /**
   * A page read (or not) for a source, as the `page` of a searching progress event.
   * @param {Record<string, unknown>} page
   */
  page(page) {
    const id = num(page, "id");
    const card = id === null ? undefined : this.sources.get(id)?.card;
    if (card === undefined) return;
    card.querySelector(".source-page")?.remove();
    const error = obj(page.error);
    const chars = num(page, "chars");
    const text = page.error
      ? `Page not read: ${str(error, "message") || str(error, "code") || "unknown error"}`
      : `Page read · ${formatCount(chars)} characters`;
    const note = el("p", "source-page", text);
    note.dataset.state = page.error ? "failed" : "done";
    card.querySelector(".source-body")?.append(note);
  }
}
