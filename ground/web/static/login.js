// The login page: posts the credentials as JSON (a cross-site form cannot), then opens the console.
"use strict";
document.getElementById("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const error = document.getElementById("login-error");
  error.textContent = "";
  const body = {user: document.getElementById("login-user").value,
                password: document.getElementById("login-password").value};
  try {
    const resp = await fetch("/api/login", {method: "POST", headers: {"Content-Type": "application/json"},
                                            body: JSON.stringify(body), credentials: "same-origin"});
    const answer = await resp.json().catch(() => ({}));
    if (!resp.ok) { error.textContent = answer.error || `login refused (HTTP ${resp.status})`; return; }
    window.location.replace("/");
  } catch (e) {
    error.textContent = `cannot reach the server: ${e}`;
  }
});
