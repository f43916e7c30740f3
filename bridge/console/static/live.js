// Keeps the live calls table current. Rows are built with textContent only: every value
// comes from a call (a caller picks their own caller ID) and must never become markup.
"use strict";

(function () {
  const REFRESH_MS = 2000;
  const table = document.getElementById("live-calls");
  const count = document.getElementById("live-count");
  const updated = document.getElementById("live-updated");
  if (!table) return;
  const body = table.tBodies[0];

  function cell(row, text, code) {
    const td = row.insertCell();
    if (code) {
      const c = document.createElement("code");
      c.textContent = text;
      td.appendChild(c);
    } else {
      td.textContent = text;
    }
  }

  async function refresh() {
    let response;
    try {
      response = await fetch("/console/api/live", { credentials: "same-origin", cache: "no-store" });
    } catch (err) {
      updated.textContent = "Cannot reach the bridge; retrying.";
      return;
    }
    if (response.status === 401) {
      window.location.assign("/console/login?next=" + encodeURIComponent("/console"));
      return;
    }
    if (!response.ok) {
      updated.textContent = "The bridge answered " + response.status + "; retrying.";
      return;
    }
    const data = await response.json();
    const rows = document.createDocumentFragment();
    for (const call of data.calls) {
      const row = document.createElement("tr");
      cell(row, call.call_sid || "(starting)", true);
      cell(row, call.from);
      cell(row, call.to);
      cell(row, call.profile);
      cell(row, call.duration);
      cell(row, call.phase);
      cell(row, String(call.turns));
      cell(row, String(call.barge_ins));
      rows.appendChild(row);
    }
    body.replaceChildren(rows);
    count.textContent = String(data.calls.length);
    updated.textContent = "Updated " + new Date().toLocaleTimeString() + "; refreshes every 2 s.";
  }

  setInterval(refresh, REFRESH_MS);
})();
