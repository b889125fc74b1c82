// Shared by the interop pages: decoding JWTs for display, and the state the
// Go tests read (window.interopState, document.body.dataset.ready).
window.interopState = { loaded: false };

function jwtClaims(jwt) {
  if (!jwt) return null;
  const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  const json = decodeURIComponent(Array.from(atob(part), (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""));
  return JSON.parse(json);
}

function render() {
  document.getElementById("out").textContent = JSON.stringify(window.interopState, null, 2);
  document.body.dataset.ready = "1";
}

function fail(where, e) {
  window.interopState.error = where + ": " + (e && e.message ? e.message : String(e));
  render();
}

// Settings the test leaves in localStorage before following an invitation link.
function setting(name) {
  return window.localStorage.getItem("interop." + name) || "";
}
