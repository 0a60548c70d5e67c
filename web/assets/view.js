// Keeps the page live: each "state" event carries the live part, rendered
// (and escaped) by the server, which replaces the one on the page. Without
// JavaScript the page is the snapshot it was served as.
(function () {
  var live = document.getElementById("live"), conn = document.getElementById("conn");
  var es = new EventSource("events");
  es.addEventListener("state", function (e) { live.innerHTML = e.data; });
  es.onopen = function () { conn.textContent = "live"; conn.className = "conn live"; };
  es.onerror = function () { conn.textContent = "reconnecting…"; conn.className = "conn"; };
})();
