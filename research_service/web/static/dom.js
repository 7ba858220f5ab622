// @ts-check
/**
 * DOM helpers that build nodes from text only: nothing in the panel ever parses HTML.
 * @module dom
 */

/**
 * An element by id; a missing one is a bug in index.html, so it throws.
 * @template {HTMLElement} T
 * @param {string} id
 * @param {new () => T} [kind]
 * @returns {T}
 */
export function byId(id, kind) {
  const node = document.getElementById(id);
  if (node === null || (kind !== undefined && !(node instanceof kind))) {
    throw new Error(`panel: #${id} is missing from index.html`);
  }
  return /** @type {T} */ (node);
}

/**
 * A new element with a class and text content (inserted as text, never as markup).
 * @param {string} tag
 * @param {string} [className]
 * @param {string} [text]
 * @returns {HTMLElement}
 */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/**
 * Words of the panel's own with text from the run set inside them (a query, a provider's
 * message), each such piece a Node from `isolated`; or plain text.
 * @typedef {string | (string | Node)[]} Sentence
 */

/**
 * Text from the run set apart inside a sentence of the panel's own: a `<bdi>`, so that
 * right-to-left text or a stray bidi override in it cannot reorder the words after it.
 * @param {string} text
 * @returns {HTMLElement}
 */
export function isolated(text) {
  return el("bdi", "", text);
}

/**
 * Replace what a node shows with a sentence (strings become text nodes, never markup).
 * @param {HTMLElement} node
 * @param {Sentence} sentence
 */
export function setSentence(node, sentence) {
  if (typeof sentence === "string") node.textContent = sentence;
  else node.replaceChildren(...sentence);
}

/**
 * The URL as a link target if its scheme is http or https, else null (no `javascript:` links).
 * @param {unknown} url
 * @returns {string | null}
 */
export function safeHref(url) {
  if (typeof url !== "string") return null;
  try {
    const parsed = new URL(url);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

/**
 * What to show as a source's origin: the host of a web URL, else the URL itself.
 * @param {unknown} url
 * @returns {string}
 */
export function hostOf(url) {
  if (typeof url !== "string") return "";
  try {
    const parsed = new URL(url);
    if (parsed.protocol === "http:" || parsed.protocol === "https:") {
      return parsed.host.replace(/^www\./, "");
    }
    if (parsed.protocol === "file:") return parsed.pathname.split("/").pop() || url;
  } catch {
    // Not a URL at all: show it as it is.
  }
  return url;
}

/**
 * A duration for people: "840 ms", "1.2 s", "2 min 05 s".
 * @param {unknown} ms
 * @returns {string}
 */
export function formatMs(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms) || ms < 0) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
  const minutes = Math.floor(ms / 60_000);
  const seconds = Math.round((ms % 60_000) / 1000);
  return `${minutes} min ${String(seconds).padStart(2, "0")} s`;
}

/**
 * A count with thousands separators.
 * @param {unknown} value
 * @returns {string}
 */
export function formatCount(value) {
  return typeof value === "number" && Number.isFinite(value) ? value.toLocaleString("en") : "–";
}

/**
 * "1 source", "3 sources", "2 queries".
 * @param {number} count
 * @param {string} noun
 * @returns {string}
 */
export function plural(count, noun) {
  if (count === 1) return `1 ${noun}`;
  return `${formatCount(count)} ${noun.endsWith("y") ? `${noun.slice(0, -1)}ies` : `${noun}s`}`;
}

/**
 * A string field of an event payload, or "" when it is missing or not a string.
 * @param {Record<string, unknown>} data
 * @param {string} key
 * @returns {string}
 */
export function str(data, key) {
  const value = data[key];
  return typeof value === "string" ? value : "";
}

/**
 * A numeric field of an event payload, or null when it is missing or not a number.
 * @param {Record<string, unknown>} data
 * @param {string} key
 * @returns {number | null}
 */
export function num(data, key) {
  const value = data[key];
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

/**
 * A field that should be an object, or an empty object.
 * @param {unknown} value
 * @returns {Record<string, unknown>}
 */
export function obj(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value)
    ? /** @type {Record<string, unknown>} */ (value)
    : {};
}
