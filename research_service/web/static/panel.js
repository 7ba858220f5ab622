// @ts-check
/**
 * The panel's wiring: the question form, cancel, the `?run=ID` share link, and the one
 * stream of the run on show, once the session (session.js) lets the panel in.
 * @module panel
 */

import { ApiError, cancelRun, createRun, getRecordedEvents, getRun } from "./api.js";
import { byId, str } from "./dom.js";
import { PANEL_ROOT, runLink } from "./paths.js";
import { RunView } from "./render.js";
import { Session } from "./session.js";
import { RunStream } from "./stream.js";

const RUN_ID = /^[0-9a-f]{16}$/;

const form = byId("ask", HTMLFormElement);
const question = byId("question", HTMLTextAreaElement);
const submit = byId("submit", HTMLButtonElement);
const cancel = byId("cancel", HTMLButtonElement);
const formError = byId("form-error");
const optionInputs = [...form.querySelectorAll("input[type=number]")].map(
  (input) => /** @type {HTMLInputElement} */ (input),
);
const reviewPlan = byId("review-plan", HTMLInputElement);
const view = new RunView();

/** @type {RunStream | null} */
let stream = null;
/** @type {string | null} */
let activeRun = null;
/** Whether the service asks for keys: then an unknown run may also be another key's run. */
let keysOn = false;

/**
 * Show a problem above the run (a refused question, an unknown run), or clear it.
 * @param {string} message
 */
function showFormError(message) {
  formError.textContent = message;
  formError.hidden = !message;
}

/**
 * Show why a call failed, except a 401: the sign-in card has already said that one.
 * @param {string} prefix
 * @param {unknown} error
 */
function showFailure(prefix, error) {
  if (error instanceof ApiError && error.status === 401) return;
  showFormError(error instanceof ApiError ? `${prefix}: ${error.detail}` : String(error));
}

/**
 * Cancel is possible only while a run of ours is going.
 * @param {string | null} runId
 */
function setActive(runId) {
  activeRun = runId;
  cancel.disabled = runId === null;
  cancel.textContent = "Cancel";
}

/**
 * Show the run and follow its stream from the start.
 * @param {string} runId
 * @param {string} text
 */
function follow(runId, text) {
  if (!session.inside) return; // signed out while the run was being fetched
  stream?.close();
  view.reset(runId, text);
  document.title = `${text} · research-service`;
  setActive(runId);
  stream = new RunStream(runId, {
    onEvent(name, data) {
      view.handle(name, data);
      if (name === "done") setActive(null);
    },
    onState(state) {
      view.connectionState(state);
      if (state === "lost") setActive(null);
    },
    onRefused: () => {
      void session.check();
      void showIfEnded(runId);
    },
  });
  stream.start();
}

/** The statuses of a run that has ended. */
const ENDED = ["completed", "failed", "cancelled"];

/**
 * A reconnect was refused: if the run has ended meanwhile, show the rest of it from its
 * recording (as if the stream had come through), else its end from its snapshot. A stream
 * resumed from an event the store lost in a crash, numbered like the run's stored `done`, is
 * answered 204 (docs/protocol.md, "After a crash"): nothing more would come.
 * @param {string} runId
 */
async function showIfEnded(runId) {
  let snapshot;
  try {
    snapshot = await getRun(runId);
  } catch {
    return; // Unreachable or refused: the stream's own retries and the session say so.
  }
  const following = () => stream !== null && stream.runId === runId && !stream.finished;
  if (!following() || !ENDED.includes(str(snapshot, "status"))) return;
  try {
    const recorded = await getRecordedEvents(runId);
    if (following()) stream?.catchUp(recorded); // its `done` ends the stream
  } catch {
    // No recording (refused as well): the snapshot says how the run ended.
  }
  if (!following()) return;
  stream?.close();
  const error = snapshot.error;
  if (error !== null && typeof error === "object") view.handle("error", error);
  view.handle("done", snapshot);
  view.connectionState("closed");
  setActive(null);
}

/**
 * The options the user changed from their defaults (unchanged ones are left to the server),
 * and `review_plan` when the plan is to be reviewed before the search.
 * @returns {Record<string, number | boolean>}
 */
function changedOptions() {
  /** @type {Record<string, number | boolean>} */
  const options = {};
  for (const input of optionInputs) {
    if (input.value !== input.defaultValue) options[input.name] = Number(input.value);
  }
  if (reviewPlan.checked) options.review_plan = true;
  return options;
}

/** @param {SubmitEvent} event */
async function onSubmit(event) {
  event.preventDefault();
  // One run per question asked: a second Enter while the first is being created is not another.
  if (submit.disabled) return;
  const text = question.value.trim();
  if (!text) {
    question.setAttribute("aria-invalid", "true");
    showFormError("Type a question first.");
    question.focus();
    return;
  }
  // The form is `novalidate`, so that this runs: the browser's own check, before any submit
  // event, cannot point at a field inside the closed options and says nothing. Open them.
  const invalid = optionInputs.find((input) => !input.checkValidity());
  if (invalid !== undefined) invalid.closest("details")?.setAttribute("open", "");
  if (!form.reportValidity()) return;
  question.removeAttribute("aria-invalid");
  showFormError("");
  submit.disabled = true;
  submit.textContent = "Starting…";
  try {
    const created = await createRun(text, changedOptions());
    const runId = str(created, "id");
    // The address becomes the run's share link; reloading it attaches to the same run.
    history.replaceState(null, "", runLink(runId));
    follow(runId, str(created, "question") || text);
  } catch (error) {
    showFailure("Could not start the run", error);
  } finally {
    submit.disabled = false;
    submit.textContent = "Research";
  }
}

async function onCancel() {
  const runId = activeRun;
  if (runId === null) return;
  cancel.disabled = true;
  cancel.textContent = "Cancelling…";
  try {
    await cancelRun(runId);
    // The run's `done` may have come first; it has the last word.
    if (activeRun === runId) view.announce("Cancelling the run…");
  } catch (error) {
    showFailure("Could not cancel", error);
    if (activeRun === runId) setActive(runId);
  }
}

/**
 * Attach to an existing run from a shared link: its question first, then its whole stream.
 * @param {string} runId
 */
async function attach(runId) {
  if (!RUN_ID.test(runId)) {
    // Not repeated: a link could put any words (and bidi overrides) in the page's own alert.
    showFormError(
      "The run in the link is not a run id (16 hex characters). Check the link, or ask a new question.",
    );
    question.focus();
    return;
  }
  try {
    const snapshot = await getRun(runId);
    const text = str(snapshot, "question");
    question.value = text;
    // A link that came through a mail or a chat may carry tracking parameters (the service
    // ignores them): the address becomes the bare share link again.
    history.replaceState(null, "", runLink(runId));
    follow(runId, text);
  } catch (error) {
    question.focus();
    if (error instanceof ApiError && error.status === 404) {
      // With keys, another key's run is a 404 too: the panel cannot tell which it is.
      showFormError(
        keysOn
          ? `Run ${runId} was not found, or it is not yours: the link is wrong, the run has been deleted, or another key started it. Ask a new question instead.`
          : `There is no run ${runId} on this service: the link is wrong or the run has been deleted. Ask a new question instead.`,
      );
    } else {
      showFailure(`Could not load run ${runId}`, error);
    }
  }
}

form.addEventListener("submit", (event) => void onSubmit(/** @type {SubmitEvent} */ (event)));
cancel.addEventListener("click", () => void onCancel());
question.addEventListener("keydown", (event) => {
  // Enter asks, Shift+Enter adds a line; an IME composition keeps its own Enter.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
});
question.addEventListener("input", () => {
  if (question.value.trim()) question.removeAttribute("aria-invalid");
});

/**
 * The panel is let in (auth off, or signed in): attach to the linked run, or wait for a question.
 * @param {import("./session.js").AuthMode} auth
 */
function begin(auth) {
  keysOn = auth === "keys";
  showFormError("");
  const shared = new URLSearchParams(location.search).get("run");
  if (shared !== null) void attach(shared.trim());
  else question.focus();
}

/**
 * Signed out or the session ended: stop following and take the run off the page. Signing out
 * also drops the run from the address; after an ended session, signing in again picks it up.
 * @param {import("./session.js").LeaveReason} reason
 */
function leave(reason) {
  stream?.close();
  stream = null;
  setActive(null);
  showFormError("");
  view.clear();
  question.value = "";
  document.title = "research-service";
  if (reason === "signed-out") history.replaceState(null, "", PANEL_ROOT.pathname);
}

const session = new Session({ ready: begin, leave, problem: showFormError });
setActive(null);
void session.start();
