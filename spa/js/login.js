// Logging in to the hub. The hub asks every API call for its token (docs/API.md, "Access"); a
// browser shows it once, in the address `kubectl shark tap` opens (/?token=…), and the hub
// trades it for an HttpOnly session cookie and takes it out of the address. This page only ever
// sees the answer: when the hub refuses it (401) it stops what polls or streams and asks for the
// token, which it hands to the hub the same way.

import { $ } from "./dom.js";

export const UNAUTHORIZED = "shark:unauthorized";

let shown = false;

/** Called by whatever got a 401 from the hub. */
export function refused() {
  window.dispatchEvent(new Event(UNAUTHORIZED));
}

/** Is this page logged in? Asks the hub once; a 401 shows the login dialog and answers false. */
export async function loggedIn() {
  let response;
  try {
    response = await fetch(new URL("api/v1/status", new URL(".", location.href)), { headers: { Accept: "application/json" } });
  } catch {
    return true;     // the hub is unreachable: the health banner says so, and retries
  }
  if (response.status !== 401) return true;
  showLogin();
  return false;
}

/** The login dialog: paste the token, or open the address tap printed. */
export function showLogin() {
  if (shown) return;
  shown = true;
  const dialog = $("#login-dialog");
  const form = $("#login-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("#login-token").value.trim();
    if (!token) return;
    // the hub answers with a cookie and this same address without the token (a 303)
    const url = new URL(location.href);
    url.searchParams.set("token", token);
    location.assign(url.toString());
  });
  dialog.addEventListener("cancel", (event) => event.preventDefault());   // nothing to see without it
  dialog.showModal();
  $("#login-token").focus();
}
