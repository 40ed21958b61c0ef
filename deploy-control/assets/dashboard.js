// The operators' dashboard: nodes, apps and jobs of the control plane, live through its
// streams (GET /admin/events, GET /admin/jobs/{id}/follow), read with fetch() because
// EventSource cannot send the X-Admin-Token header. The token lives in sessionStorage only.
"use strict";

const TOKEN_KEY = "berthAdminToken";
const ADDRESS_KEY = "berthNodeAddresses";
const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem(TOKEN_KEY) || "";
let nodes = { items: [], ttlMs: 15000, now: 0 };
let clockOffset = 0; // server clock minus this browser's, from the last nodes snapshot
let apps = [];
let jobs = [];
let selectedJob = null;
let eventsAbort = null;
let followAbort = null;

/** A refused token: shown on the sign-in form, not as a generic error. */
class Unauthorized extends Error {}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

async function api(path, method) {
  const res = await fetch(path, { method: method || "GET", headers: { "X-Admin-Token": token } });
  if (res.status === 401) throw new Unauthorized(await problem(res));
  if (!res.ok) throw new Error(res.status + ": " + await problem(res));
  return res.status === 204 ? null : res.json();
}

async function problem(res) {
  try { return (await res.json()).detail || res.statusText; } catch (_) { return res.statusText; }
}

function showError(e) {
  if (e instanceof Unauthorized) return signOut(
    "The control plane refused this admin token (401: " + e.message + "). Check BERTH_ADMIN_TOKEN and sign in again.");
  $("error").textContent = e.message;
}

// ---- sign in / out ----

function signOut(message) {
  token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  stopStreams();
  $("main").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message || "";
  setLive("signed out", "");
  $("token").value = "";
  $("token").focus();
}

async function signIn() {
  $("sign-in-error").textContent = "";
  try {
    // One plain request first, so a wrong token is told apart from a broken stream.
    showNodes(await api("/admin/dashboard/nodes"));
  } catch (e) {
    if (e instanceof Unauthorized) return signOut(
      "The control plane refused this admin token (401: " + e.message + "). Check BERTH_ADMIN_TOKEN and try again.");
    $("sign-in-error").textContent = "Could not reach the control plane: " + e.message;
    return;
  }
  $("sign-in").hidden = true;
  $("main").hidden = false;
  $("sign-out").hidden = false;
  document.body.dataset.signedIn = "true";
  setLive("connecting…", "");
  await refreshLists();
  streamEvents();
}

function stopStreams() {
  if (eventsAbort) eventsAbort.abort();
  if (followAbort) followAbort.abort();
  eventsAbort = followAbort = null;
}

function setLive(text, cls) {
  $("live").textContent = text;
  $("live").className = "live " + cls;
}

// ---- streams ----

/** Reads an SSE response body, calling onEvent(name, data) per event, until it ends. */
async function readEvents(path, signal, onEvent) {
  const res = await fetch(path, { headers: { "X-Admin-Token": token, Accept: "text/event-stream" }, signal });
  if (res.status === 401) throw new Unauthorized(await problem(res));
  if (!res.ok) throw new Error(res.status + ": " + await problem(res));
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message", data = [];
      for (const line of frame.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, data.join("\n"));
    }
  }
}

async function streamEvents() {
  let delay = 1000;
  while (token) {
    const abort = new AbortController();
    eventsAbort = abort;
    let connected = false;
    try {
      await readEvents("/admin/events", abort.signal, (name, data) => {
        if (!connected) {
          // From now on every change comes as an event: read the lists once to catch up
          // with what changed before the stream started.
          connected = true;
          delay = 1000;
          setLive("live", "on");
          scheduleRefresh();
        }
        if (name === "nodes") {
          const before = reportedStates(nodes);
          showNodes(JSON.parse(data));
          // A heartbeat that put an app to sleep or woke it changed its run: re-read the apps.
          if (reportedStates(nodes) !== before) scheduleRefresh();
        }
        else if (name === "jobs") scheduleRefresh();
      });
    } catch (e) {
      if (abort.signal.aborted) return;
      if (e instanceof Unauthorized) return showError(e);
    }
    if (abort.signal.aborted || !token) return;
    setLive("reconnecting…", "off");
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 15000);
    await refreshLists();
  }
}

let refreshTimer = null;
/** Job changes come in bursts: re-read the lists once per burst. */
function scheduleRefresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; refreshLists(); }, 150);
}

async function refreshLists() {
  try {
    const [a, j] = await Promise.all([api("/admin/dashboard/apps"), api("/admin/jobs?" + jobQuery())]);
    apps = a.items;
    jobs = j.items;
    $("error").textContent = "";
    renderApps();
    renderJobs();
    renderNodes(); // a node lists its apps with their state
  } catch (e) { showError(e); }
}

// ---- nodes ----

function showNodes(snapshot) {
  nodes = snapshot;
  clockOffset = snapshot.now - Date.now();
  $("ttl").textContent = seconds(snapshot.ttlMs);
  renderNodes();
}

/** What the agents last reported of their apps (`appId:state` per node), to notice a change. */
function reportedStates(snapshot) {
  return (snapshot && snapshot.items || []).map((n) => n.nodeId + "=" +
    n.reportedApps.map((r) => r.appId + ":" + r.state).join(",")).join(";");
}

/** The apps of a node that count against its maxApps: up to maxSleepingApps asleep do not. */
function countedApps(n) {
  return n.apps.length - Math.min(n.sleepingApps, n.capacity.maxSleepingApps, n.apps.length);
}

function seconds(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 120 ? s + " s" : Math.round(s / 60) + " min";
}

function health(n) {
  const age = Date.now() + clockOffset - Date.parse(n.lastHeartbeatAt);
  if (n.state === "OFFLINE" || age > nodes.ttlMs) return ["dead", age];
  if (age > nodes.ttlMs / 2) return ["late", age];
  return ["ok", age];
}

/** The agent address before the last change: as the control plane recorded it (any heartbeat that
 *  moved the agent), else the one first seen for the node in this tab. */
function addressChange(n) {
  if (n.previousAgentBaseUrl) return n.previousAgentBaseUrl + " (at " + time(n.agentBaseUrlChangedAt) + ")";
  const seen = JSON.parse(sessionStorage.getItem(ADDRESS_KEY) || "{}");
  if (!(n.nodeId in seen)) {
    seen[n.nodeId] = n.agentBaseUrl;
    sessionStorage.setItem(ADDRESS_KEY, JSON.stringify(seen));
  }
  return seen[n.nodeId] !== n.agentBaseUrl ? seen[n.nodeId] : null;
}

function bar(used, total) {
  const pct = total > 0 ? Math.min(100, Math.round(used / total * 100)) : 0;
  return el("span", { class: "bar", "aria-hidden": "true" }, el("span", { style: "width:" + pct + "%" }));
}

function renderNodes() {
  const box = $("nodes");
  // A snapshot re-draws the cards: keep the keyboard focus on the same button.
  const focused = document.activeElement && document.activeElement.dataset.focusKey;
  box.replaceChildren();
  $("nodes-count").textContent = "(" + nodes.items.length + ")";
  if (!nodes.items.length) box.append(el("p", { class: "hint", text: "No node has sent a heartbeat yet." }));
  for (const n of nodes.items) {
    const [h, age] = health(n);
    const oldAddress = addressChange(n);
    const stateOf = (id) => (apps.find((a) => a.appId === id) || {}).state;
    const reported = (id) => (n.reportedApps.find((r) => r.appId === id) || {}).state;
    const appList = el("ul", { class: "apps" }, ...n.apps.map((id) =>
      el("li", {}, id + " ", stateOf(id) ? el("span", { class: "badge " + stateOf(id) + (stateOf(id) === "RUNNING" ? "-app" : ""), text: stateOf(id) }) : null,
        reported(id) ? el("span", { class: "hint", text: " container " + reported(id) }) : null)));
    const actions = el("div", { class: "actions" },
      actionButton(n, "cordon", "Cordon", n.scheduling === "CORDONED"),
      actionButton(n, "uncordon", "Uncordon", n.scheduling === "ACTIVE"),
      actionButton(n, "drain", "Drain", n.scheduling === "DRAINING"),
      el("button", {
        type: "button", "data-action": "revoke", "data-focus-key": n.nodeId + ":revoke", class: "danger", text: "Revoke",
        onclick: () => confirmThen("Revoke node " + n.name + " (" + n.nodeId + ")? Its credential is refused from now on and it goes OFFLINE at once;" +
          " it can only come back by joining again under a new node id.",
          async () => { await api("/admin/runtime-nodes/" + encodeURIComponent(n.nodeId) + "/revoke", "POST"); await showNodesAfter(); }),
      }));
    box.append(el("article", { class: "node", "data-node": n.nodeId, "data-health": h, "aria-label": "node " + n.name },
      el("h3", {}, n.name, el("span", { class: "id", text: n.nodeId }),
        el("span", { class: "badge " + n.state, text: n.state }),
        el("span", { class: "badge " + n.scheduling, "data-scheduling": n.scheduling, text: n.scheduling })),
      oldAddress ? el("p", { class: "flag", "data-address-changed": "true", text: "Agent address changed: " + oldAddress + " → " + n.agentBaseUrl }) : null,
      el("dl", {},
        el("dt", { text: "Heartbeat" }), heartbeatCell(el("dd", {}), h, age),
        el("dt", { text: "Schedulable" }), el("dd", { text: n.schedulable ? "yes" : "no" }),
        el("dt", { text: "Apps" }), el("dd", { "data-apps": countedApps(n) }, bar(countedApps(n), n.capacity.maxApps),
          countedApps(n) + " / " + n.capacity.maxApps + (n.apps.length !== countedApps(n) ? " (" + n.apps.length + " placed)" : "")),
        el("dt", { text: "Asleep" }), el("dd", { "data-sleeping": n.sleepingApps }, bar(n.sleepingApps, n.capacity.maxSleepingApps),
          n.sleepingApps + " / " + n.capacity.maxSleepingApps),
        el("dt", { text: "Memory" }), el("dd", {}, bar(n.reservedMemoryMb, n.capacity.memoryMb), n.reservedMemoryMb + " / " + n.capacity.memoryMb + " MiB reserved"),
        el("dt", { text: "CPU" }), el("dd", {}, bar(n.reservedCpus, n.capacity.cpus), n.reservedCpus + " / " + n.capacity.cpus + " cores reserved"),
        el("dt", { text: "Agent" }), el("dd", { text: n.agentBaseUrl + " (v" + n.version + ")" }),
        el("dt", { text: "Labels" }), el("dd", { text: Object.entries(n.labels).map(([k, v]) => k + "=" + v).join(", ") || "—" })),
      n.apps.length ? appList : el("p", { class: "hint", text: "No apps placed here." }),
      actions));
  }
  if (focused) { const f = box.querySelector('[data-focus-key="' + CSS.escape(focused) + '"]'); if (f) f.focus(); }
}

function heartbeatCell(dd, h, age) {
  dd.className = "heartbeat " + h;
  dd.dataset.heartbeat = h;
  dd.textContent = seconds(age) + " ago" + (h === "dead" ? " — past the TTL" : h === "late" ? " — late" : "");
  return dd;
}

/** Moves the heartbeat ages on with the clock, in place (buttons and focus stay put). */
function tickAges() {
  for (const n of nodes.items) {
    const card = $("nodes").querySelector('[data-node="' + CSS.escape(n.nodeId) + '"]');
    if (!card) continue;
    const [h, age] = health(n);
    card.dataset.health = h;
    heartbeatCell(card.querySelector("[data-heartbeat]"), h, age);
  }
}

function actionButton(n, action, label, current) {
  return el("button", {
    type: "button", "data-action": action, "data-focus-key": n.nodeId + ":" + action, disabled: current,
    class: action === "drain" ? "danger" : null, text: label,
    onclick: () => confirmThen(label + " node " + n.name + " (" + n.nodeId + ")?" +
      (action === "drain" ? " Every app on it is redeployed elsewhere." : action === "cordon" ? " It keeps its apps but takes no new ones." : ""),
      async () => { showNodesAfter(await api("/admin/runtime-nodes/" + encodeURIComponent(n.nodeId) + "/" + action, "POST")); }),
  });
}

async function showNodesAfter() {
  showNodes(await api("/admin/dashboard/nodes"));
  await refreshLists();
}

// ---- confirmation ----

function confirmThen(text, action) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  dialog.returnValue = "";
  // Lists re-draw while the dialog is open: give the focus back to the opener's successor.
  const opener = document.activeElement && document.activeElement.dataset.focusKey;
  dialog.onclose = async () => {
    const back = opener && document.querySelector('[data-focus-key="' + CSS.escape(opener) + '"]');
    if (back && !back.disabled) back.focus();
    if (dialog.returnValue !== "ok") return;
    try { await action(); } catch (e) { showError(e); }
  };
  dialog.showModal();
  $("confirm-ok").focus();
}

// ---- apps ----

function time(iso) { return iso ? new Date(iso).toLocaleString() : "—"; }

function renderApps() {
  const body = $("apps").tBodies[0];
  body.replaceChildren();
  $("apps-count").textContent = "(" + apps.length + ")";
  if (!apps.length) body.append(el("tr", {}, el("td", { colspan: 7, class: "hint", text: "No app has been deployed yet." })));
  for (const a of apps) {
    // A sleeping app lives too: its route is kept and its next request wakes it.
    const lives = a.state === "RUNNING" || a.state === "SLEEPING" || a.state === "DEPLOYING";
    body.append(el("tr", { "data-app": a.appId, "data-state": a.state },
      el("th", { scope: "row", text: a.appId }),
      el("td", {}, el("span", { class: "badge " + a.state + (a.state === "RUNNING" ? "-app" : ""), text: a.state }),
        a.error ? el("span", { class: "sub", text: a.error }) : null),
      el("td", {}, time(a.updatedAt), a.lastJob ? el("span", { class: "sub" },
        el("button", { type: "button", onclick: () => selectJob(a.lastJob.jobId), text: a.lastJob.kind + " " + a.lastJob.state })) : null),
      el("td", {}, a.url && lives ? el("a", { href: a.url, rel: "noopener", text: a.url }) : document.createTextNode(a.url ? "(" + a.url + ")" : "—")),
      el("td", { text: a.nodeId ? (lives ? a.nodeId : "last on " + a.nodeId) : "—" }),
      el("td", { class: "mono wide", text: a.image || "—" }),
      el("td", {},
        el("button", { type: "button", "data-action": "redeploy", text: "Redeploy",
          onclick: () => confirmThen("Redeploy app " + a.appId + " with its last deploy?", () => appAction(a.appId, "redeploy")) }), " ",
        el("button", { type: "button", "data-action": "stop", class: "danger", disabled: a.state === "STOPPED", text: "Stop",
          onclick: () => confirmThen("Stop app " + a.appId + "? Its container is removed.", () => appAction(a.appId, "stop")) }))));
  }
}

async function appAction(appId, action) {
  const job = await api("/admin/apps/" + encodeURIComponent(appId) + "/" + action, "POST");
  await refreshLists();
  selectJob(job.jobId);
}

// ---- jobs ----

function jobQuery() {
  const f = new FormData($("job-filters"));
  const q = new URLSearchParams({ limit: "100" });
  for (const k of ["state", "appId", "label"]) if (f.get(k)) q.set(k, f.get(k).trim());
  return q.toString();
}

function renderJobs() {
  const node = (new FormData($("job-filters")).get("nodeId") || "").trim();
  const shown = node ? jobs.filter((j) => j.nodeId === node) : jobs;
  $("jobs-note").textContent = node ? "Node filter applies to the newest " + jobs.length + " jobs matching the other filters." : "";
  const body = $("jobs").tBodies[0];
  body.replaceChildren();
  if (!shown.length) body.append(el("tr", {}, el("td", { colspan: 9, class: "hint", text: "No job matches." })));
  for (const j of shown) {
    body.append(el("tr", { "data-job": j.jobId, "data-state": j.state, class: j.jobId === selectedJob ? "selected" : null },
      el("td", { class: "mono" }, el("button", { type: "button", "aria-label": "show job " + j.jobId, onclick: () => selectJob(j.jobId), text: j.jobId.slice(0, 8) + "…" })),
      el("td", { text: j.appId }),
      el("td", { text: j.kind }),
      el("td", {}, el("span", { class: "badge " + j.state, text: j.state })),
      el("td", { text: j.attempt + "/" + j.maxAttempts }),
      el("td", { text: j.nodeId || "—" }),
      el("td", { class: "wide", text: time(j.createdAt) }),
      el("td", { class: "wide", text: j.error || j.waitingReason || "" }),
      el("td", {}, j.state === "PENDING" ? el("button", { type: "button", "data-action": "cancel", class: "danger", text: "Cancel",
        onclick: () => confirmThen("Cancel pending job " + j.jobId + " of " + j.appId + "?", async () => {
          await api("/admin/jobs/" + j.jobId + "/cancel", "POST");
          await refreshLists();
        }) }) : null)));
  }
}

/** Words for how an attempt ended (GET /admin/jobs/{id}/timeline's outcomes). */
const OUTCOME_TEXT = {
  SUCCEEDED: "succeeded",
  FAILED: "failed for good",
  RETRY: "failed, retried",
  EXPIRED: "lease ran out",
  CANCELLED: "cancelled",
};

/** The job's life as [at, text, attrs] items: created, each claim with its runner and node and
 *  how it ended (the control plane's attempt history), waiting, finished. `j` is the job as the
 *  follow stream last sent it, `t` its timeline. */
function timeline(j, t) {
  const items = [[t.createdAt, "Created (" + j.kind + " of " + j.appId + ")", { "data-step": "created" }]];
  for (const a of t.attempts) {
    items.push([a.claimedAt, "Attempt " + a.attempt + " of " + j.maxAttempts + " claimed by runner " + a.runnerId +
      (a.nodeId ? " on node " + a.nodeId : ""), { "data-step": "claim", "data-attempt": a.attempt }]);
    if (a.outcome) items.push([a.endedAt, "Attempt " + a.attempt + ": " + (OUTCOME_TEXT[a.outcome] || a.outcome) +
      (a.error ? " — " + a.error : ""), { "data-step": "end", "data-attempt": a.attempt, "data-outcome": a.outcome }]);
  }
  if (j.state === "PENDING" && j.attempt > 0) items.push([j.updatedAt, "Back to PENDING for a retry, not before " + time(j.runAfter), { "data-step": "retry" }]);
  if (j.state === "PENDING" && j.waitingReason) items.push([j.updatedAt, "Waiting: " + j.waitingReason, { "data-step": "waiting" }]);
  if (t.finishedAt) items.push([t.finishedAt, "Finished: " + t.state + (j.error ? " — " + j.error : "") + (j.result && j.result.url ? " — " + j.result.url : ""), { "data-step": "finished" }]);
  return items;
}

let timelineReads = 0;
/** Shows job `j` (a change the follow stream sent) and re-reads its timeline: once per change,
 *  the newest read wins. */
async function showJob(j) {
  $("job-title").textContent = "Job " + j.jobId;
  $("job-state").textContent = j.state;
  $("job-state").className = "badge " + j.state;
  const read = ++timelineReads;
  const t = await api("/admin/jobs/" + encodeURIComponent(j.jobId) + "/timeline");
  if (read !== timelineReads || selectedJob !== j.jobId) return;
  $("job-detail").dataset.state = j.state;
  $("job-detail").dataset.attempts = t.attempts.length;
  $("job-timeline").replaceChildren(...timeline(j, t).map(([at, text, attrs]) =>
    el("li", attrs, at ? el("time", { datetime: at, text: time(at) }) : null, " " + text)));
}

async function selectJob(jobId) {
  if (followAbort) followAbort.abort();
  selectedJob = jobId;
  renderJobs();
  const detail = $("job-detail");
  detail.hidden = false;
  detail.dataset.job = jobId;
  $("job-logs").textContent = "";
  $("job-timeline").replaceChildren();
  $("job-following").textContent = "following…";
  $("job-title").focus();
  const abort = new AbortController();
  followAbort = abort;
  try {
    await readEvents("/admin/jobs/" + jobId + "/follow", abort.signal, (name, data) => {
      if (name === "job") showJob(JSON.parse(data)).catch((e) => { if (!abort.signal.aborted) showError(e); });
      else if (name === "logs") {
        const pre = $("job-logs");
        const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        for (const l of JSON.parse(data)) pre.append(l.line + "\n");
        if (atEnd) pre.scrollTop = pre.scrollHeight;
      } else if (name === "end") $("job-following").textContent = "finished";
    });
  } catch (e) {
    if (!abort.signal.aborted) { showError(e); $("job-following").textContent = "not following: " + e.message; }
  }
}

// ---- wiring ----

$("sign-in-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  signIn();
});
$("sign-out").addEventListener("click", () => signOut(""));
$("job-filters").addEventListener("submit", (ev) => { ev.preventDefault(); refreshLists(); });
$("job-filters").addEventListener("reset", () => setTimeout(refreshLists, 0));
$("job-close").addEventListener("click", () => {
  if (followAbort) followAbort.abort();
  selectedJob = null;
  $("job-detail").hidden = true;
  renderJobs();
});
// Heartbeat ages move with the clock between snapshots: re-draw them, without re-reading.
setInterval(() => { if (token && !$("main").hidden) tickAges(); }, 1000);

if (token) signIn(); else signOut("");
