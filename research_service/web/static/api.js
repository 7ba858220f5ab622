// @ts-check
/**
 * The JSON endpoints the panel calls: create, look up and cancel a run (docs/api.md).
 * @module api
 */

import { apiPath } from "./paths.js";

/** An HTTP error carrying the problem+json `detail` the service sent. */
export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} detail
   */
  constructor(status, detail) {
    super(detail);
    this.status = status;
    this.detail = detail;
  }
}

/**
 * The service's own words for a failed response: problem+json `detail`, else the status.
 * @param {Response} response
 * @returns {Promise<ApiError>}
 */
async function failure(response) {
  let detail = `the service answered ${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && typeof body.detail === "string" && body.detail) detail = body.detail;
  } catch {
    // Not JSON (a proxy's error page): keep the status line.
  }
  return new ApiError(response.status, detail);
}

/**
 * Send a request and return its JSON body, or throw an ApiError with the service's detail.
 * @param {string} path
 * @param {RequestInit} [init]
 * @returns {Promise<Record<string, unknown>>}
 */
async function call(path, init) {
  let response;
  try {
    response = await fetch(path, { ...init, headers: { Accept: "application/json", ...init?.headers } });
  } catch {
    throw new ApiError(0, "the service cannot be reached; check that it is running and try again");
  }
  if (!response.ok) throw await failure(response);
  return response.json();
}

/**
 * `POST /v1/runs`: start a run; resolves to the created run (its `id` among others).
 * @param {string} question
 * @param {Record<string, number>} options
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
 * `POST /v1/runs/{id}/cancel`: ask the run to stop; its `done` event says when it has.
 * @param {string} runId
 */
export function cancelRun(runId) {
  return call(apiPath(`v1/runs/${encodeURIComponent(runId)}/cancel`), { method: "POST" });
}
