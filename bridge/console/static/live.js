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

  const columns = [...table.tHead.rows[0].cells].map((th) => th.textContent);

  // The cell's column name travels with it: narrow screens show each row as a card.
  function cell(row, text) {
    const td = row.insertCell();
    td.dataset.label = columns[td.cellIndex];
    td.textContent = text;
    return td;
  }

  function callCell(row, call) {
    const td = cell(row, "");
    const code = document.createElement("code");
    code.textContent = call.call_sid || "(starting)";
    if (call.href) {
      const link = document.createElement("a");
      link.href = call.href; // built by the server from an escaped sid
      link.appendChild(code);
      td.appendChild(link);
    } else {
      td.appendChild(code);
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
      callCell(row, call);
      cell(row, call.from);
      cell(row, call.to);
      cell(row, call.profile);
      cell(row, call.duration);
      cell(row, call.status);
      cell(row, String(call.turns));
      cell(row, String(call.barge_ins));
      cell(row, call.replica);
      rows.appendChild(row);
    }
    body.replaceChildren(rows);
    count.textContent = String(data.calls.length);
    updated.textContent = "Updated " + new Date().toLocaleTimeString() + "; refreshes every 2 s.";
  }

  setInterval(refresh, REFRESH_MS);
})();
