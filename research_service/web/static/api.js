// @ts-check
/**
 * The JSON endpoints the panel calls: create, look up and cancel a run, decide on its plan, and
 * the session that signs the browser in when the service asks for API keys (docs/api.md,
 * docs/panel.md).
 * @module api
 */

import { apiPath } from "./paths.js";

/** An HTTP error carrying the problem+json `detail` the service sent. */
export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} detail
   * @param {string} [type] the problem's `type` URI, when the service sent one
   */
  constructor(status, detail, type = "") {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.type = type;
  }
}

/**
 * The service's own words for a failed response: problem+json `detail`, else the status.
 * @param {Response} response
 * @returns {Promise<ApiError>}
 */
async function failure(response) {
  let detail = `the service answered ${response.status} ${response.statusText}`.trim();
  let type = "";
  try {
    const body = await response.json();
    if (body && typeof body.detail === "string" && body.detail) detail = body.detail;
    if (body && typeof body.type === "string") type = body.type;
  } catch {
    // Not JSON (a proxy's error page): keep the status line.
  }
  return new ApiError(response.status, detail, type);
}

/**
 * Who hears that a run call was answered 401 (a revoked key, an ended session).
 * @type {((error: ApiError) => void) | null}
 */
let unauthorized = null;

/**
 * Hand every later 401 of a run call to `handler` (the session calls answer 401 by design and
 * report it to their caller instead).
 * @param {(error: ApiError) => void} handler
 */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

/**
 * Send a request; only a network failure throws here.
 * @param {string} path
 * @param {RequestInit} [init]
 * @returns {Promise<Response>}
 */
async function send(path, init) {
  try {
    return await fetch(path, { ...init, headers: { Accept: "application/json", ...init?.headers } });
  } catch {
    throw new ApiError(0, "the service cannot be reached; check that it is running and try again");
  }
}

/**
 * Send a request and return its JSON body, or throw an ApiError with the service's detail.
 * @param {string} path
 * @param {RequestInit} [init]
 * @returns {Promise<Record<string, unknown>>}
 */
async function call(path, init) {
  const response = await send(path, init);
  if (!response.ok) {
    const error = await failure(response);
    if (error.status === 401) unauthorized?.(error);
    throw error;
  }
  return jsonOf(response);
}

/**
 * The JSON object a successful answer carries. Anything else (a proxy's or a network's sign-in
 * page answered 200) is an ApiError that says so, not the parser's message quoting that page.
 * @param {Response} response
 * @returns {Promise<Record<string, unknown>>}
 */
async function jsonOf(response) {
  let parsed;
  try {
    parsed = await response.json();
  } catch {
    parsed = null;
  }
  if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) return parsed;
  const type = response.headers.get("Content-Type")?.split(";")[0].trim() || "no type";
  throw new ApiError(
    response.status,
    `the service answered ${response.status} with ${type}, not its JSON: is a proxy or a sign-in page in the way?`,
  );
}

/**
 * `POST /v1/runs`: start a run; resolves to the created run (its `id` among others).
 * @param {string} question
 * @param {Record<string, number | boolean>} options
 */
export function createRun(question, options) {
  const body = Object.keys(options).length ? { question, options } : { question };
  return call(apiPath("v1/runs"), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

/**
 * `GET /v1/runs/{id}`: the run's snapshot.
 * @param {string} runId
 */
export function getRun(runId) {
  return call(apiPath(`v1/runs/${encodeURIComponent(runId)}`));
}

/**
 * `GET /v1/runs/{id}/recording`: a finished run's events, in order, each `{seq, event, data}`
 * (docs/recordings.md; the header line is left out).
 * @param {string} runId
 * @returns {Promise<Record<string, unknown>[]>}
 */
export async function getRecordedEvents(runId) {
  const response = await send(apiPath(`v1/runs/${encodeURIComponent(runId)}/recording`));
  if (!response.ok) {
    const error = await failure(response);
    if (error.status === 401) unauthorized?.(error);
    throw error;
  }
  const lines = (await response.text()).split("\n").filter((line) => line.trim() !== "");
  return lines.slice(1).map((line) => JSON.parse(line));
}

/**
 * `POST /v1/runs/{id}/cancel`: ask the run to stop; its `done` event says when it has.
 * @param {string} runId
 */
export function cancelRun(runId) {
  return call(apiPath(`v1/runs/${encodeURIComponent(runId)}/cancel`), { method: "POST" });
}

/**
 * `POST /v1/runs/{id}/plan`: the decision on a plan that waits for review: `{}` approves it,
 * `{queries}` runs those instead, `{feedback}` has the model plan again; `round`, the round
 * shown, makes sure no other round is decided. A run that waits for no decision in that round
 * (another reviewer was first, the wait timed out, the run ended) answers 409.
 * @param {string} runId
 * @param {{queries?: string[], feedback?: string, round?: number}} decision
 */
export function decidePlan(runId, decision) {
  return call(apiPath(`v1/runs/${encodeURIComponent(runId)}/plan`), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(decision),
  });
}

/**
 * `GET /v1/session`: `{auth: "off"}`, or `{auth: "keys", name, admin}` when signed in; null when
 * the service asks for a key first (401). A service without the endpoint (404) has no sign-in.
 * @returns {Promise<Record<string, unknown> | null>}
 */
export async function getSession() {
  const response = await send(apiPath("v1/session"));
  if (response.status === 401) return null;
  if (response.status === 404) return { auth: "off" };
  if (!response.ok) throw await failure(response);
  return jsonOf(response);
}

/**
 * `POST /v1/session` with an API key: the service answers with a session cookie (HttpOnly, so
 * this script never sees it) and who is signed in. A refused key throws its 401 problem.
 * @param {string} apiKey
 * @returns {Promise<Record<string, unknown>>}
 */
export async function signIn(apiKey) {
  const response = await send(apiPath("v1/session"), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ api_key: apiKey }),
  });
  if (!response.ok) throw await failure(response);
  return jsonOf(response);
}

/** `DELETE /v1/session`: the service ends the session and clears its cookie (204). */
export async function signOut() {
  const response = await send(apiPath("v1/session"), { method: "DELETE" });
  if (!response.ok && response.status !== 401) throw await failure(response);
}
