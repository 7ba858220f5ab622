// @ts-check
/**
 * Signing in when the service asks for API keys: the sign-in card, the "Signed in as" line and
 * sign out. The key is sent once, to `POST v1/session`, and kept nowhere: the service answers
 * with an HttpOnly session cookie that the browser sends with every later call and stream.
 * @module session
 */

import { ApiError, getSession, onUnauthorized, signIn, signOut } from "./api.js";
import { byId, str } from "./dom.js";

/** What the sign-in card says when a call of a signed-in page is refused. */
export const SESSION_ENDED =
  "Your session ended (it expired, it was signed out elsewhere, or its key was revoked); sign in again.";

/**
 * @typedef {"off" | "keys"} AuthMode
 * @typedef {"signed-out" | "ended"} LeaveReason
 * @typedef {{
 *   ready: (auth: AuthMode) => void,
 *   leave: (reason: LeaveReason) => void,
 *   problem: (message: string) => void,
 * }} SessionHandlers
 */

/** Shows the panel to whoever may use it, and the sign-in card to everyone else. */
export class Session {
  /** @param {SessionHandlers} handlers */
  constructor(handlers) {
    this.handlers = handlers;
    this.workspace = byId("workspace");
    this.form = byId("signin", HTMLFormElement);
    this.key = byId("api-key", HTMLInputElement);
    this.submit = byId("signin-submit", HTMLButtonElement);
    this.error = byId("signin-error");
    this.account = byId("account");
    this.name = byId("account-name");
    this.signOutButton = byId("sign-out", HTMLButtonElement);
    /** @type {AuthMode} */
    this.auth = "off";
    /** Whether the panel is on show (auth off, or signed in). */
    this.inside = false;
  }

  /** Ask the service whether it wants a key and whether this browser is signed in. */
  async start() {
    onUnauthorized(() => this.ended());
    this.form.addEventListener("submit", (event) => void this.onSubmit(event));
    this.signOutButton.addEventListener("click", () => void this.onSignOut());
    this.key.addEventListener("input", () => this.key.removeAttribute("aria-invalid"));
    let session;
    try {
      session = await getSession();
    } catch {
      // The service did not say (down, a proxy's 502): show the panel, whose own calls report
      // the problem; a 401 among them brings the sign-in card.
      session = { auth: "off" };
    }
    if (session === null) this.showSignIn("");
    else this.enter(session);
  }

  /**
   * Show the panel: signed in (with the "Signed in as" line) or with nothing to sign in to.
   * @param {Record<string, unknown>} session
   */
  enter(session) {
    this.auth = str(session, "auth") === "keys" ? "keys" : "off";
    this.inside = true;
    this.name.textContent = str(session, "name");
    this.account.hidden = this.auth !== "keys";
    this.signOutButton.disabled = false;
    this.form.hidden = true;
    this.showError("");
    this.workspace.hidden = false;
    this.handlers.ready(this.auth);
  }

  /**
   * Hide the panel and ask for a key, saying why when there is a reason.
   * @param {string} message
   * @param {LeaveReason} [reason]
   */
  showSignIn(message, reason = "ended") {
    if (this.inside) this.handlers.leave(reason);
    this.inside = false;
    this.workspace.hidden = true;
    this.account.hidden = true;
    this.name.textContent = "";
    this.form.hidden = false;
    this.key.value = "";
    this.showError(message);
    this.key.focus();
  }

  /** A call was answered 401 while the panel was on show: the session is over. */
  ended() {
    if (this.inside) this.showSignIn(SESSION_ENDED);
  }

  /** A stream was refused (an EventSource cannot tell why): ask whether the session ended. */
  async check() {
    if (!this.inside) return;
    let session;
    try {
      session = await getSession();
    } catch {
      return; // Unreachable: the stream's own retries say so.
    }
    if (session === null) this.ended();
  }

  /**
   * Show a refused key (or clear the line).
   * @param {string} message
   */
  showError(message) {
    this.error.textContent = message;
    this.error.hidden = !message;
  }

  /** @param {SubmitEvent} event */
  async onSubmit(event) {
    event.preventDefault();
    // The key lives only in this call: out of the input at once, never written anywhere.
    const key = this.key.value.trim();
    this.key.value = "";
    if (!key) {
      this.key.setAttribute("aria-invalid", "true");
      this.showError("Paste your API key first.");
      this.key.focus();
      return;
    }
    this.key.removeAttribute("aria-invalid");
    this.submit.disabled = true;
    this.submit.textContent = "Signing in…";
    try {
      this.enter(await signIn(key));
    } catch (error) {
      this.key.setAttribute("aria-invalid", "true");
      if (!(error instanceof ApiError)) this.showError(String(error));
      else this.showError(error.status === 401 ? error.detail : `Could not sign in: ${error.detail}`);
      this.key.focus();
    } finally {
      this.submit.disabled = false;
      this.submit.textContent = "Sign in";
    }
  }

  async onSignOut() {
    this.signOutButton.disabled = true;
    try {
      await signOut();
    } catch (error) {
      // Still signed in: saying otherwise would leave the session open on a shared screen.
      this.signOutButton.disabled = false;
      this.handlers.problem(`Could not sign out: ${error instanceof ApiError ? error.detail : String(error)}`);
      return;
    }
    this.showSignIn("", "signed-out");
  }
}
