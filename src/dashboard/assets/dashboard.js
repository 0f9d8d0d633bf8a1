// spectro dashboard: follows the server-sent event stream (new events appear at the top
// without a reload; the cluster list refreshes its rows; the charts are fetched again).
// No framework, no external script.
(function () {
  "use strict";
  var base = document.body.getAttribute("data-base") || "";
  var table = document.getElementById("events");

  function text(tag, value, cls) {
    var el = document.createElement(tag);
    el.textContent = value;
    if (cls) el.className = cls;
    return el;
  }

  function refreshList() {
    var list = document.getElementById("clusters");
    if (!list) return;
    fetch(base + "/api/clusters", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : []; })
      .then(function (rows) {
        var seen = {};
        rows.forEach(function (c) {
          seen[c.name] = true;
          var row = list.querySelector('tr[data-cluster="' + CSS.escape(c.name) + '"]');
          if (!row) { window.location.reload(); return; }
          var phase = row.querySelector(".c-phase span");
          phase.textContent = c.phase;
          phase.className = "phase phase-" + c.phase;
          phase.setAttribute("data-phase", c.phase);
          row.querySelector(".c-nodes").textContent = c.ready + "/" + c.desired;
          row.querySelector(".c-endpoint").textContent = c.endpoint || "-";
          var health = row.querySelector(".c-health span");
          health.textContent = c.health;
          health.className = "health health-" + (c.health === "healthy" ? "ok" : c.health === "unhealthy" ? "bad" : "unknown");
        });
        list.querySelectorAll("tr.cluster").forEach(function (row) {
          if (!seen[row.getAttribute("data-cluster")]) row.remove();
        });
      })
      .catch(function () {});
  }

  var pending = null;
  function soon(fn) {
    if (pending) return;
    pending = setTimeout(function () { pending = null; fn(); }, 400);
  }

  if (table && window.EventSource) {
    var live = text("span", "live", "");
    live.id = "live";
    var heading = table.previousElementSibling;
    if (heading) heading.appendChild(live);
    var withCluster = table.getAttribute("data-with-cluster") === "1";
    var source = new EventSource(table.getAttribute("data-stream"));
    source.addEventListener("open", function () { live.textContent = "live"; });
    source.addEventListener("error", function () { live.textContent = "reconnecting"; });
    source.addEventListener("cluster-event", function (msg) {
      var e = JSON.parse(msg.data);
      var body = table.tBodies[0];
      if (body.querySelector('tr[data-seq="' + e.seq + '"]')) return;
      var tr = document.createElement("tr");
      tr.className = "event fresh sev-" + e.severity;
      tr.setAttribute("data-seq", String(e.seq));
      tr.appendChild(text("td", String(e.time).replace("T", " ").replace(/\..*$|Z$/, ""), "time"));
      if (withCluster) {
        var td = document.createElement("td");
        if (e.clusterName) {
          var a = text("a", e.clusterName, "");
          a.href = base + "/clusters/" + encodeURIComponent(e.clusterName);
          td.appendChild(a);
        }
        tr.appendChild(td);
      }
      tr.appendChild(text("td", e.severity, ""));
      tr.appendChild(text("td", e.reason, ""));
      tr.appendChild(text("td", e.message, ""));
      body.insertBefore(tr, body.firstChild);
      while (body.rows.length > 200) body.deleteRow(body.rows.length - 1);
      if (withCluster) soon(refreshList);
      else soon(refreshCharts);
    });
  }

  function refreshCharts() {
    document.querySelectorAll("figure[data-src]").forEach(function (fig) {
      fetch(fig.getAttribute("data-src"), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (svg) {
          if (!svg) return;
          var doc = new DOMParser().parseFromString(svg, "image/svg+xml");
          var fresh = doc.documentElement;
          var old = fig.querySelector("svg");
          if (old && fresh && fresh.nodeName === "svg") old.replaceWith(document.importNode(fresh, true));
        })
        .catch(function () {});
    });
  }
  if (document.querySelector("figure[data-src]")) setInterval(refreshCharts, 15000);
})();
