// autobot status pages: live updates over server-sent events. Pages work without
// this script; with it, `data-live="page"` pages re-read their live parts when the
// build engine reports something, and log pages append new output as it comes.
// Text from the server is inserted with textContent or from the server's own
// escaped HTML, never built from event data.
(function () {
  "use strict";
  var body = document.body;
  var live = body.getAttribute("data-live");
  var status = document.getElementById("live-status");
  // Tree-stable countdowns: "build in N s" counts down to its deadline.
  setInterval(function () {
    var els = document.querySelectorAll("[data-deadline]");
    for (var i = 0; i < els.length; i++) {
      var secs = els[i].querySelector(".secs");
      var left = Math.max(0, Math.ceil(parseFloat(els[i].getAttribute("data-deadline")) - Date.now() / 1000));
      if (secs) { secs.textContent = String(left); }
    }
  }, 1000);
  if (!live || !window.EventSource) { return; }
  function setStatus(on, text) {
    if (!status) { return; }
    status.textContent = text;
    status.className = "live-status " + (on ? "on" : "off");
  }

  if (live === "page") {
    var timer = null, busy = false, again = false;
    var refresh = function () {
      if (busy) { again = true; return; }
      busy = true;
      fetch(location.href, { headers: { "X-Autobot-Fragment": "1" }, cache: "no-store", credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html === null) { return; }
          var doc = new DOMParser().parseFromString(html, "text/html");
          var parts = document.querySelectorAll("[data-part]");
          for (var i = 0; i < parts.length; i++) {
            var fresh = doc.getElementById(parts[i].id);
            if (fresh) { parts[i].replaceWith(document.importNode(fresh, true)); }
          }
          body.setAttribute("data-refreshed", String(Date.now()));
        })
        .catch(function () {})
        .then(function () {
          busy = false;
          if (again) { again = false; schedule(); }
        });
    };
    var schedule = function () {
      if (timer) { return; }
      timer = setTimeout(function () { timer = null; refresh(); }, 150);
    };
    var es = new EventSource("/events");
    es.onopen = function () { setStatus(true, "live"); };
    es.onerror = function () { setStatus(false, "reconnecting"); };
    es.onmessage = function (e) {
      var ev;
      try { ev = JSON.parse(e.data); } catch (x) { return; }
      if (ev.event === "log_appended") { return; }
      schedule();
    };
  }

  if (live === "log") {
    var pre = document.getElementById("log");
    var state = document.getElementById("log-state");
    if (!pre) { return; }
    var url = pre.getAttribute("data-tail") + "?offset=" + encodeURIComponent(pre.getAttribute("data-offset"));
    var tail = new EventSource(url);
    tail.onopen = function () { setStatus(true, "live"); };
    tail.onerror = function () { setStatus(false, "reconnecting"); };
    tail.onmessage = function (e) {
      var m;
      try { m = JSON.parse(e.data); } catch (x) { return; }
      var atBottom = (window.innerHeight + window.scrollY) >= document.body.offsetHeight - 20;
      if (m.c === "stdout") {
        pre.appendChild(document.createTextNode(m.t));
      } else {
        var span = document.createElement("span");
        span.className = m.c === "stderr" ? "stderr" : "header";
        span.textContent = m.t;
        pre.appendChild(span);
      }
      if (atBottom) { window.scrollTo(0, document.body.scrollHeight); }
    };
    tail.addEventListener("end", function () {
      tail.close();
      pre.setAttribute("data-complete", "true");
      setStatus(true, "complete");
      if (state) { state.textContent = " · complete"; }
    });
  }
})();
