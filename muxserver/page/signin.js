// The sign-in page: the name and password (or a token) go in an Authorization header
// to /.muxserver-auth/signin, whose answer sets the session cookie; then the page the
// person asked for is loaded again, now signed in. Nothing is kept by this script.
"use strict";
const next = document.body.dataset.next;
if (next) {  // a link's page: move on to the folder (this navigation carries the cookie)
  location.replace(next);
} else {
  const form = document.getElementById("signin");
  const message = document.getElementById("message");
  const byPassword = document.getElementById("by-password");
  const byToken = document.getElementById("by-token");
  const toggle = document.getElementById("switch");
  const say = (text, kind) => { message.textContent = text; message.className = kind || ""; };
  const base64 = text => btoa(String.fromCharCode(...new TextEncoder().encode(text)));
  const usingToken = () => !byToken.hidden;
  const setMode = token => {
    byToken.hidden = !token; byPassword.hidden = token;
    document.getElementById("name").required = !token;
    document.getElementById("password").required = !token;
    document.getElementById("token").required = token;
    toggle.textContent = token ? "Use a name and password instead" : "Use a token instead";
    (token ? document.getElementById("token") : document.getElementById("name")).focus();
  };
  toggle.addEventListener("click", () => setMode(!usingToken()));
  // Signed in already, but arrived from another site (the Strict cookie stayed home)?
  // (only when the request offered nothing: a refused link or session must stay refused)
  if (document.body.dataset.recheck) {
    fetch("/.muxserver-auth/whoami", {credentials: "same-origin"}).then(r => {
      if (r.ok && !form.dataset.tried) location.reload();
    }).catch(() => {});
  }
  form.addEventListener("submit", async event => {
    event.preventDefault();
    form.dataset.tried = "1";
    const header = usingToken()
      ? "Bearer " + document.getElementById("token").value.trim()
      : "Basic " + base64(document.getElementById("name").value.trim() + ":"
                          + document.getElementById("password").value);
    say("Signing in…");
    document.getElementById("go").disabled = true;
    try {
      const answer = await fetch("/.muxserver-auth/signin", {
        method: "POST", credentials: "same-origin", headers: {Authorization: header}});
      if (answer.ok) {
        say("Signed in.", "ok");
        location.reload();
        return;
      }
      const text = (await answer.text()).replace(/^\d+ /, "").split(": send")[0].trim();
      say(text.charAt(0).toUpperCase() + text.slice(1) + ".", "err");
    } catch (error) {
      say("The server cannot be reached: " + error.message, "err");
    }
    document.getElementById("go").disabled = false;
  });
}
