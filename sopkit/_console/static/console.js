// sopkit console: partial updates without a reload (no framework, no build).
"use strict";

// The overview refreshes its tiles, tables and chart every 5 seconds.
function refreshOverview(box) {
  const url = box.dataset.refresh;
  setInterval(async () => {
    if (document.hidden) return;
    const reply = await fetch(url, { credentials: "same-origin" });
    if (reply.ok && (reply.headers.get("content-type") || "").startsWith("text/html")) {
      const html = await reply.text();
      const doc = new DOMParser().parseFromString(html, "text/html");
      // a <details> the operator opened stays open
      for (const open of box.querySelectorAll("details[id][open]")) {
        const same = doc.getElementById(open.id);
        if (same) same.open = true;
      }
      box.replaceChildren(...doc.body.childNodes);
    }
  }, 5000);
}

// Running simulations: progress bars follow the job until it is done, then the link shows.
function followSimulations(table) {
  const url = table.dataset.progress;
  const tick = async () => {
    const reply = await fetch(url, { credentials: "same-origin" });
    if (!reply.ok) return;
    const { jobs } = await reply.json();
    let running = false;
    for (const job of jobs) {
      const row = table.querySelector(`tr[data-job="${job.id}"]`);
      if (!row) continue;
      row.dataset.state = job.state;
      row.querySelector("progress").value = job.percent;
      const state = row.querySelector(".state");
      if (job.state !== "running") state.textContent = state.dataset[job.state] || job.state;
      const summary = row.querySelector(".summary");
      if (job.state === "done") {
        const { customers, actions } = summary.dataset;
        summary.textContent = `${job.customers} ${customers}, ${job.actions} ${actions}`;
        row.querySelector("a.report").hidden = false;
      } else if (job.state === "failed") {
        summary.textContent = job.error;
      } else {
        running = true;
      }
    }
    if (running) setTimeout(tick, 300);
  };
  if (table.querySelector('tr[data-state="running"]')) tick();
}

// A playbook file chosen on the simulations page is read into the form's text area (the
// form posts the text; the file itself is never sent).
function fillFromFile(input) {
  input.addEventListener("change", async () => {
    const file = input.files && input.files[0];
    const target = document.getElementById(input.dataset.fills);
    if (file && target) target.value = await file.text();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  for (const input of document.querySelectorAll("input[type=file][data-fills]")) {
    fillFromFile(input);
  }
  const box = document.getElementById("overview");
  if (box) refreshOverview(box);
  const jobs = document.getElementById("jobs");
  if (jobs) followSimulations(jobs);
});
