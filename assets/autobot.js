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
    // The line being written (the page's last line when it has no newline yet).
    var lines = pre.querySelectorAll(".l");
    var cur = lines.length ? lines[lines.length - 1] : null;
    var next = parseInt(pre.getAttribute("data-first-line") || "1", 10) + lines.length;
    if (cur && /\n$/.test(cur.textContent)) { cur = null; }
    var newLine = function () {
      var span = document.createElement("span");
      span.className = "l";
      span.id = "L" + next;
      var a = document.createElement("a");
      a.className = "ln";
      a.href = "#L" + next;
      a.setAttribute("data-n", String(next));
      span.appendChild(a);
      pre.appendChild(span);
      next += 1;
      return span;
    };
    // ANSI SGR codes as the server renders them: classes on spans, text as text.
    var sgr = { fg: null, bg: null, b: false, dim: false, i: false, u: false };
    var applySgr = function (params) {
      var codes = params === "" ? [0] : params.split(";").map(function (p) { return p === "" ? 0 : parseInt(p, 10); });
      for (var k = 0; k < codes.length; k++) {
        var c = codes[k];
        if (c === 0) { sgr = { fg: null, bg: null, b: false, dim: false, i: false, u: false }; }
        else if (c === 1) { sgr.b = true; } else if (c === 2) { sgr.dim = true; }
        else if (c === 3) { sgr.i = true; } else if (c === 4) { sgr.u = true; }
        else if (c === 22) { sgr.b = false; sgr.dim = false; } else if (c === 23) { sgr.i = false; } else if (c === 24) { sgr.u = false; }
        else if (c >= 30 && c <= 37) { sgr.fg = c - 30; } else if (c === 39) { sgr.fg = null; }
        else if (c >= 40 && c <= 47) { sgr.bg = c - 40; } else if (c === 49) { sgr.bg = null; }
        else if (c >= 90 && c <= 97) { sgr.fg = c - 82; } else if (c >= 100 && c <= 107) { sgr.bg = c - 92; }
        else if (c === 38 || c === 48) {
          var n = null;
          if (codes[k + 1] === 5) { n = codes[k + 2] < 16 ? codes[k + 2] : null; k += 2; }
          else if (codes[k + 1] === 2) { k += 4; }
          if (c === 38) { sgr.fg = n; } else { sgr.bg = n; }
        }
      }
    };
    var sgrClass = function () {
      var c = [];
      if (sgr.fg !== null) { c.push("ansi-fg" + sgr.fg); }
      if (sgr.bg !== null) { c.push("ansi-bg" + sgr.bg); }
      if (sgr.b) { c.push("ansi-b"); } if (sgr.dim) { c.push("ansi-dim"); }
      if (sgr.i) { c.push("ansi-i"); } if (sgr.u) { c.push("ansi-u"); }
      return c.join(" ");
    };
    var appendAnsi = function (el, text) {
      var re = /\u001b(?:\[([0-9;?]*)([@-~])|\][^\u0007\u001b]*(?:\u0007|\u001b\\)?|.)/g;
      var last = 0, mm;
      var put = function (t) {
        if (!t) { return; }
        var cls = sgrClass();
        if (cls) {
          var s = document.createElement("span");
          s.className = cls;
          s.textContent = t;
          el.appendChild(s);
        } else {
          el.appendChild(document.createTextNode(t));
        }
      };
      while ((mm = re.exec(text)) !== null) {
        put(text.slice(last, mm.index));
        if (mm[2] === "m") { applySgr(mm[1]); }
        last = re.lastIndex;
      }
      put(text.slice(last));
    };
    var url = pre.getAttribute("data-tail") + "?offset=" + encodeURIComponent(pre.getAttribute("data-offset"));
    var tail = new EventSource(url);
    tail.onopen = function () { setStatus(true, "live"); };
    tail.onerror = function () { setStatus(false, "reconnecting"); };
    tail.onmessage = function (e) {
      var m;
      try { m = JSON.parse(e.data); } catch (x) { return; }
      var atBottom = (window.innerHeight + window.scrollY) >= document.body.offsetHeight - 20;
      var parts = String(m.t).split("\n");
      for (var i = 0; i < parts.length; i++) {
        var text = parts[i] + (i < parts.length - 1 ? "\n" : "");
        if (text === "") { continue; }
        if (!cur) { cur = newLine(); }
        var into = cur;
        if (m.c !== "stdout") {
          into = document.createElement("span");
          into.className = m.c === "stderr" ? "stderr" : "header";
          cur.appendChild(into);
        }
        appendAnsi(into, text);
        if (i < parts.length - 1) { cur = null; }
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

// The log page: line links (#L12, #L10-L20; shift-click a number for a
// range), search of the whole log with next/previous, and keyboard shortcuts on
// every page. No server data is turned into markup here.
(function () {
  "use strict";
  var pre = document.getElementById("log");
  var marked = [];
  function mark(from, to) {
    for (var i = 0; i < marked.length; i++) { marked[i].classList.remove("sel"); }
    marked = [];
    var first = null;
    for (var n = from; n <= to; n++) {
      var el = document.getElementById("L" + n);
      if (!el) { continue; }
      el.classList.add("sel");
      marked.push(el);
      if (!first) { first = el; }
    }
    return first;
  }
  function fromHash() {
    if (!pre) { return; }
    var m = /^#L(\d+)(?:-L?(\d+))?$/.exec(location.hash);
    if (!m) { return; }
    var from = parseInt(m[1], 10), to = m[2] ? parseInt(m[2], 10) : from;
    if (to < from) { var t = from; from = to; to = t; }
    var first = mark(from, to);
    if (first) {
      first.scrollIntoView({ block: "center" });
    } else {
      // A line of another page: the server knows which (`?line=N` redirects
      // there, and the browser keeps the #L… fragment).
      var start = parseInt(pre.getAttribute("data-first-line") || "1", 10);
      var shown = pre.querySelectorAll(".l").length;
      if ((from < start || from >= start + shown) && !/[?&]at=/.test(location.search)) {
        location.replace(location.pathname + "?line=" + from + location.hash);
      }
    }
  }
  if (pre) {
    var anchor = null;
    pre.addEventListener("click", function (e) {
      var a = e.target;
      if (!a || !a.classList || !a.classList.contains("ln")) { return; }
      var n = parseInt(a.getAttribute("data-n"), 10);
      if (e.shiftKey && anchor !== null) {
        e.preventDefault();
        var from = Math.min(anchor, n), to = Math.max(anchor, n);
        history.replaceState(null, "", "#L" + from + "-L" + to);
        mark(from, to);
      } else {
        anchor = n;
      }
    });
    window.addEventListener("hashchange", fromHash);
    fromHash();

    // Search of the whole log: the server lists the matching lines (1,000 at
    // a time, each with its page); Enter, next and previous move through them,
    // to another page when the match is there (?page=N&q=TEXT#L123), where
    // the list is taken up again (kept in sessionStorage for this log).
    var form = document.getElementById("log-find");
    var input = document.getElementById("log-search");
    var count = document.getElementById("log-count");
    var api = form ? form.getAttribute("data-api") : null;
    var here = parseInt(pre.getAttribute("data-page") || "1", 10);
    var top = parseInt(pre.getAttribute("data-first-line") || "1", 10);
    var found = null, at = -1, busy = false, shown = [];
    var store = "autobot-search:" + location.pathname;
    var save = function () {
      try { sessionStorage.setItem(store, JSON.stringify({ q: found.q, hits: found.hits, more: found.more })); } catch (x) {}
    };
    var restore = function (q) {
      try {
        var s = JSON.parse(sessionStorage.getItem(store) || "null");
        if (s && s.q === q && s.hits) { return s; }
      } catch (x) {}
      return null;
    };
    var say = function () {
      if (!found) { count.textContent = ""; return; }
      if (!found.hits.length) { count.textContent = found.more ? "searching…" : "no matches"; return; }
      count.textContent = (at >= 0 ? (at + 1) + " of " + found.hits.length : found.hits.length + " lines") +
        (found.more ? " (more…)" : "");
    };
    // The matches on this page, highlighted; the current one marked.
    var paint = function () {
      for (var i = 0; i < shown.length; i++) { shown[i].classList.remove("hit", "cur"); }
      shown = [];
      if (!found) { return; }
      for (var j = 0; j < found.hits.length; j++) {
        if (found.hits[j].page !== here) { continue; }
        var el = document.getElementById("L" + found.hits[j].line);
        if (!el) { continue; }
        el.classList.add("hit");
        if (j === at) { el.classList.add("cur"); }
        shown.push(el);
      }
    };
    // The next batch of matches, after the last one known.
    var more = function (then) {
      if (busy || !api) { return; }
      busy = true;
      var last = found.hits.length ? found.hits[found.hits.length - 1].line : 0;
      var asked = found;
      fetch(api + "?q=" + encodeURIComponent(found.q) + "&after=" + last, { credentials: "same-origin", cache: "no-store" })
        .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
        .then(function (j) {
          busy = false;
          if (asked !== found) { return; }
          for (var i = 0; i < j.matches.length; i++) { found.hits.push({ line: j.matches[i].line, page: j.matches[i].page }); }
          found.more = !!j.more && j.matches.length > 0;
          save();
          then();
        })
        .catch(function () { busy = false; count.textContent = "search failed"; });
    };
    var visit = function (i) {
      at = i;
      var h = found.hits[i];
      var to = location.pathname + "?page=" + h.page + "&q=" + encodeURIComponent(found.q) + "#L" + h.line;
      if (h.page !== here) { location.href = to; return; }
      history.replaceState(null, "", to);
      mark(h.line, h.line);
      paint();
      var el = document.getElementById("L" + h.line);
      if (el) { el.scrollIntoView({ block: "center" }); }
      say();
    };
    var go = function (d) {
      var q = input.value;
      if (!q || busy) { return; }
      if (!found || found.q !== q) {
        found = { q: q, hits: [], more: true };
        at = -1;
        say();
        more(function () { go(d); });
        return;
      }
      var n = found.hits.length, i = -1, k;
      if (at < 0) {
        // From this page: the first match on it or after (or the last before).
        for (k = 0; k < n; k++) { if (found.hits[k].line >= top) { i = k; break; } }
        if (d < 0) { i = i < 0 ? n - 1 : i - 1; }
        if (i < 0 && d > 0 && found.more) { more(function () { go(d); }); return; }
        if (i < 0) { i = d > 0 ? 0 : n - 1; }
      } else {
        i = at + d;
      }
      if (i >= n) {
        if (found.more) { more(function () { go(d); }); return; }
        i = 0;
      }
      if (i < 0) { i = n - 1; }
      if (n) { visit(i); } else { say(); }
    };
    if (input && count) {
      document.getElementById("log-prev").hidden = false;
      document.getElementById("log-next").hidden = false;
      input.addEventListener("input", function () { found = null; at = -1; paint(); say(); });
      input.addEventListener("keydown", function (e) {
        if (e.key === "Enter") { e.preventDefault(); go(e.shiftKey ? -1 : 1); }
      });
      document.getElementById("log-next").addEventListener("click", function () { go(1); });
      document.getElementById("log-prev").addEventListener("click", function () { go(-1); });
      form.addEventListener("submit", function (e) { e.preventDefault(); go(1); });
      // Arrived from a match on another page: take the list up again there.
      var q0 = new URLSearchParams(location.search).get("q");
      var m0 = /^#L(\d+)$/.exec(location.hash);
      if (q0) {
        input.value = q0;
        var line0 = m0 ? parseInt(m0[1], 10) : -1;
        var resume = function () {
          for (var k = 0; k < found.hits.length; k++) {
            if (found.hits[k].line === line0) { at = k; break; }
          }
          var last = found.hits.length ? found.hits[found.hits.length - 1].line : 0;
          if (at < 0 && found.more && last < line0) { more(resume); return; }
          paint();
          say();
          // In the middle of the window, once the browser's own jump to the
          // #L anchor (at the page's load) is done.
          var el = document.getElementById("L" + line0);
          var centre = function () { if (el) { el.scrollIntoView({ block: "center" }); } };
          if (document.readyState === "complete") { centre(); } else { window.addEventListener("load", centre); }
        };
        found = restore(q0);
        if (found) { resume(); } else { found = { q: q0, hits: [], more: true }; more(resume); }
      }
    }
  }

  // Per-line times, shown on demand: each line's data-t (ms after the step's
  // start, rendered by the server) as +MM:SS.mmm, the clock time on hover.
  var times = document.getElementById("log-times");
  if (pre && times && !times.disabled) {
    var t0 = parseInt(pre.getAttribute("data-t0") || "0", 10);
    var two = function (n) { return (n < 10 ? "0" : "") + n; };
    var elapsed = function (ms) {
      var sign = ms < 0 ? "-" : "+";
      ms = Math.abs(ms);
      var s = Math.floor(ms / 1000), m = Math.floor(s / 60), h = Math.floor(m / 60);
      var frac = String(ms % 1000);
      while (frac.length < 3) { frac = "0" + frac; }
      return sign + (h ? h + ":" + two(m % 60) : two(m)) + ":" + two(s % 60) + "." + frac;
    };
    var built = false;
    var show = function (on) {
      if (on && !built) {
        built = true;
        var ls = pre.querySelectorAll(".l[data-t]");
        for (var i = 0; i < ls.length; i++) {
          var t = parseInt(ls[i].getAttribute("data-t"), 10);
          var span = document.createElement("span");
          span.className = "ts";
          span.setAttribute("data-ts", elapsed(t));
          span.title = new Date(t0 + t).toISOString().replace("T", " ").replace("Z", " UTC") + " (received by the master)";
          var ln = ls[i].querySelector("a.ln");
          ls[i].insertBefore(span, ln ? ln.nextSibling : ls[i].firstChild);
        }
      }
      pre.classList.toggle("times", on);
      try { localStorage.setItem("autobot-log-times", on ? "1" : ""); } catch (x) {}
    };
    times.addEventListener("change", function () { show(times.checked); });
    try { if (localStorage.getItem("autobot-log-times")) { times.checked = true; } } catch (x) {}
    if (times.checked) { show(true); }
  }

  // "My builds" remembers the author last asked for.
  try {
    var me = document.getElementById("my-author");
    if (me && me.value) { localStorage.setItem("autobot-author", me.value); }
    var saved = localStorage.getItem("autobot-author");
    var nav = document.getElementById("nav-my");
    if (saved && nav) { nav.href = "/my?author=" + encodeURIComponent(saved); }
  } catch (x) {}

  // Keyboard shortcuts: g w waterfall, g b builders, g c console, g h changes;
  // / search (log page) or the filters; j/k next/previous match or page;
  // e first error; ? this help.
  var pending = "";
  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT")) {
      if (e.key === "Escape") { t.blur(); }
      return;
    }
    var k = e.key;
    if (pending === "g") {
      pending = "";
      var to = { w: "/waterfall", b: "/builders", c: "/console", h: "/changes", s: "/slaves", m: "/my" }[k];
      if (to) { location.href = to; }
      return;
    }
    var click = function (id) { var el = document.getElementById(id); if (el) { el.click(); return true; } return false; };
    if (k === "g") { pending = "g"; return; }
    if (k === "/") {
      var box = document.getElementById("log-search") || document.querySelector("form.filters input");
      if (box) { e.preventDefault(); box.focus(); }
    } else if (k === "j" || k === "n") {
      if (!click("log-next")) { click("page-next"); }
    } else if (k === "k" || k === "p") {
      if (!click("log-prev")) { click("page-prev"); }
    } else if (k === "e") {
      click("first-error");
    } else if (k === "?") {
      var help = document.getElementById("shortcuts");
      if (help) { help.hidden = !help.hidden; }
    }
  });
})();
