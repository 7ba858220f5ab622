// @ts-check
/**
 * The streaming answer: plain text whose `[n]` and `[1, 2]` citations become links to the
 * source cards, built piece by piece without ever repeating or reordering text.
 * @module answer
 */

/** A whole citation at the start of the text: `[3]`, `[1, 2]`. */
const CITATION = /^\[\d{1,3}(?:\s*,\s*\d{1,3})*\]/;
/** The start of what may still become a citation once the next piece arrives: `[`, `[1,`. */
const PARTIAL = /^\[(?:\d{1,3}(?:\s*,\s*\d{1,3})*\s*,?\s*)?$/;
/** Longer than any citation the model writes; past it the bracket is just text. */
const MAX_PENDING = 40;

/**
 * @typedef {(id: number) => string | null} SourceTitle
 *   The title of source `id`, or null when the run has no such source.
 */

/** Appends answer pieces to an element as text nodes and citation links. */
export class AnswerWriter {
  /**
   * @param {HTMLElement} root
   * @param {SourceTitle} sourceTitle
   */
  constructor(root, sourceTitle) {
    this.root = root;
    this.sourceTitle = sourceTitle;
    /** Text held back because it may be the start of a citation split across pieces. */
    this.pending = "";
    /** Everything appended so far, for comparison with `done.answer`. */
    this.text = "";
  }

  /** Empty the answer. */
  clear() {
    this.root.replaceChildren();
    this.pending = "";
    this.text = "";
  }

  /**
   * Add the next piece of the answer.
   * @param {string} piece
   */
  append(piece) {
    this.text += piece;
    this.pending += piece;
    this.drain(false);
  }

  /** Write out whatever is held back: the answer has ended. */
  finish() {
    this.drain(true);
  }

  /**
   * Emit the pending text up to the point where a citation may still be forming.
   * @param {boolean} final
   */
  drain(final) {
    while (this.pending) {
      const bracket = this.pending.indexOf("[");
      if (bracket === -1) {
        this.writeText(this.pending);
        this.pending = "";
        return;
      }
      if (bracket > 0) {
        this.writeText(this.pending.slice(0, bracket));
        this.pending = this.pending.slice(bracket);
      }
      const match = CITATION.exec(this.pending);
      if (match !== null) {
        this.writeCitation(match[0]);
        this.pending = this.pending.slice(match[0].length);
        continue;
      }
      if (!final && this.pending.length < MAX_PENDING && PARTIAL.test(this.pending)) return;
      this.writeText("[");
      this.pending = this.pending.slice(1);
    }
  }

  /**
   * Append text, growing the last text node rather than adding one node per piece.
   * @param {string} text
   */
  writeText(text) {
    if (!text) return;
    const last = this.root.lastChild;
    if (last instanceof Text) last.appendData(text);
    else this.root.append(document.createTextNode(text));
  }

  /**
   * Append a citation: `[3]` as one link; in `[1, 2]` each known number is its own link.
   * @param {string} raw
   */
  writeCitation(raw) {
    const ids = (raw.match(/\d+/g) ?? []).map(Number);
    if (ids.length === 1) {
      this.writeLinkOrText(raw, ids[0]);
      return;
    }
    for (const part of raw.split(/(\d+)/)) {
      if (/^\d+$/.test(part)) this.writeLinkOrText(part, Number(part));
      else this.writeText(part);
    }
  }

  /**
   * A link to source `id`'s card, or plain text when the run has no such source.
   * @param {string} text
   * @param {number} id
   */
  writeLinkOrText(text, id) {
    const title = this.sourceTitle(id);
    if (title === null) {
      this.writeText(text);
      return;
    }
    const link = document.createElement("a");
    link.className = "cite";
    link.href = `#source-${id}`;
    link.textContent = text;
    link.title = title ? `Source ${id}: ${title}` : `Source ${id}`;
    this.root.append(link);
  }
}
