// @ts-check
/**
 * Where the panel lives. Every address it uses (the API, the event stream, a run's share link)
 * is resolved against the folder it is served from, never the site's root, so the same files
 * work at `/` and under a reverse proxy's path prefix such as `/research/` (docs/reverse-proxy.md).
 * @module paths
 */

/** The panel's own folder: the one above this module's `static/`, e.g. `/` or `/research/`. */
export const PANEL_ROOT = new URL("../", import.meta.url);

/**
 * An API path (`v1/runs`, no leading slash) as an address on this origin under the panel's
 * folder: `/v1/runs` at the root, `/research/v1/runs` under a prefix.
 * @param {string} path
 * @returns {string}
 */
export function apiPath(path) {
  const url = new URL(path, PANEL_ROOT);
  return url.pathname + url.search;
}

/**
 * The panel's address attached to a run (its share link): `/?run=ID`, `/research/?run=ID`.
 * @param {string} runId
 * @returns {string}
 */
export function runLink(runId) {
  return `${PANEL_ROOT.pathname}?run=${encodeURIComponent(runId)}`;
}
