// The streamer's dashboard. Signing in trades a credential for a session token of this tab's own:
// the one-time code of the link the daemon prints (#code=, in the fragment, which browsers never send
// to the server), or the token pasted into the form. The session token lives in this tab's
// sessionStorage and goes out only in the X-Streamer-Token header of POST requests; the long-lived
// token is never kept, and the address bar (so the history) never holds anything that still works.
// Chat-supplied text is only set through textContent.
import { connectLive, el, clear } from "/overlays/live.js";
import "/overlays/preview.js"; // keeps the <img data-stream> preview connected
import { mountPoll } from "/overlays/widgets.js";
import { LineChart } from "/assets/chart.js";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "streamer-dashboard-token";

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

// POST /api/session with a sign-in code or a token; on success this tab keeps the session token it gets.
async function signIn(credential) {
  let response;
  try {
    response = await fetch("/api/session", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Streamer-Token": credential },
      body: "{}",
      credentials: "omit",
    });
  } catch {
    return false;
  }
  if (!response.ok) return false;
  const data = await response.json();
  if (typeof data.token !== "string" || !data.token) return false;
  sessionStorage.setItem(TOKEN_KEY, data.token);
  return true;
}

// A credential in the address: taken out of the address bar before anything else happens, then traded.
// #token= is what older versions printed; it still works, but the page keeps a session token instead.
async function signInFromUrl() {
  const match = /(?:^#|&)(code|token)=([^&]+)/.exec(location.hash);
  if (!match) return;
  history.replaceState(null, "", location.pathname + location.search);
  const credential = decodeURIComponent(match[2]);
  if (match[1] === "token") sessionStorage.setItem(TOKEN_KEY, credential); // usable while the trade runs
  if (await signIn(credential)) {
    signedIn();
  } else if (match[1] === "code") {
    $("token-hint").textContent = "This sign-in link was already used or has expired (each works once). " +
      "Paste the token, or restart the daemon for a new link.";
    showTokenForm(true);
  }
}

function signedIn() {
  showTokenForm(false);
  approvalsKey = null; // the waiting requests' text needs the token: fetch it now
  refreshApprovals(lastQueue);
  loadBlocklist();
}

function showTokenForm(show) { $("token-form").classList.toggle("hidden", !show); }

async function post(path, body, resultEl) {
  resultEl.textContent = "…";
  resultEl.className = "result";
  let response;
  try {
    response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Streamer-Token": token() },
      body: JSON.stringify(body ?? {}),
      credentials: "omit",
    });
  } catch (err) {
    resultEl.textContent = `daemon unreachable: ${err}`;
    resultEl.className = "result bad";
    return null;
  }
  const text = await response.text();
  let data = null;
  try { data = JSON.parse(text); } catch { /* plain-text error */ }
  if (response.status === 401 || response.status === 403) showTokenForm(true);
  if (!response.ok) {
    const reason = data ? (data.reason || data.status || text) : text;
    resultEl.textContent = `refused (${response.status}): ${reason}`;
    resultEl.className = "result bad";
    return null;
  }
  resultEl.textContent = data && data.status ? `${data.status}${data.reason ? `: ${data.reason}` : ""}` : "done";
  resultEl.className = "result ok";
  return data;
}

// ---------------------------------------------------------------- live state

const updatePoll = mountPoll($("poll-current"));
let strengthTouched = false;
let stepsTouched = false;

function renderState(state) {
  const p = state.prompt;
  $("current-prompt").textContent = p.text;
  $("previous-prompt").textContent = p.previous_text || "—";
  const when = p.changed_at ? new Date(p.changed_at * 1000).toLocaleTimeString() : "";
  $("prompt-meta").textContent = [`v${p.version}`, `${p.source}/${p.author}`, p.reason, when].filter(Boolean).join(" · ");
  const ai = $("ai-state");
  ai.textContent = p.enabled ? "AI on" : "AI off (kill switch)";
  ai.className = `pill ${p.enabled ? "ok" : "bad"}`;
  $("transform").textContent = state.transform;
  const m = state.model;
  const strength = p.strength ?? m.strength;
  if (!strengthTouched) $("strength").value = String(strength);
  if (!stepsTouched) $("steps").value = String(m.steps);
  $("strength-value").textContent = Number($("strength").value).toFixed(2);
  $("model-info").textContent =
    `${m.preset} ${m.width}×${m.height} · steps ${m.steps} · strength ${strength.toFixed(2)}` +
    `${p.strength === null ? " (config)" : " (override)"} · transition over ${state.transition_chunks} chunks`;
  refreshApprovals(state.queue);
  updatePoll(state);
  $("poll-end").disabled = !state.poll || state.poll.status !== "running";
}

// The live state carries only the waiting requests' numbers (overlays read it too); their text comes
// from a token-checked POST, fetched again whenever the numbers change.
let approvalsKey = null;
let lastQueue = null;

async function refreshApprovals(queue) {
  lastQueue = queue;
  const ids = queue && Array.isArray(queue.ids) ? queue.ids : [];
  const key = ids.join(",");
  if (key === approvalsKey) return;
  approvalsKey = key;
  if (ids.length === 0) { renderApprovals([]); return; }
  let response;
  try {
    response = await fetch("/api/approvals/list", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Streamer-Token": token() },
      body: "{}",
      credentials: "omit",
    });
  } catch { approvalsKey = null; return; }
  if (!response.ok) {
    approvalsKey = null;  // try again on the next change (or once a token is entered)
    if (response.status === 401 || response.status === 403) showTokenForm(true);
    return;
  }
  const data = await response.json();
  if (key === approvalsKey) renderApprovals(Array.isArray(data.items) ? data.items : []);
}

function renderApprovals(queue) {
  const list = $("approvals");
  clear(list);
  $("approvals-empty").classList.toggle("hidden", queue.length > 0);
  for (const item of queue) {
    const li = el("li", "approval");
    li.dataset.id = String(item.id);
    const who = el("span", "approval-author", `${item.author ?? "?"} (${item.source ?? "chat"})`);
    const text = el("span", "approval-text", item.text ?? "");
    text.title = item.model_text ? `becomes: ${item.model_text}` : "";
    const approve = el("button", "approve", "Approve");
    const deny = el("button", "deny danger", "Deny");
    approve.type = deny.type = "button";
    const result = el("span", "result");
    approve.addEventListener("click", () => post(`/api/approvals/${encodeURIComponent(item.id)}/approve`, {}, result));
    deny.addEventListener("click", () => post(`/api/approvals/${encodeURIComponent(item.id)}/deny`, { reason: "denied on the dashboard" }, result));
    li.append(who, text, approve, deny, result);
    list.append(li);
  }
}

// ---------------------------------------------------------------- blocked words (token-checked POSTs)

function showBlocklist(data) {
  $("blocklist-terms").value = data.terms.join("\n");
  const config = data.config_terms.length ? ` · ${data.config_terms.length} more in the config file` : "";
  $("blocklist-info").textContent = `${data.entries} entries in all${config}`;
}

async function loadBlocklist() {
  if (!token()) return;
  const data = await post("/api/blocklist", {}, $("blocklist-result"));
  if (data) {
    showBlocklist(data);
    $("blocklist-result").textContent = "";
  }
}

async function saveBlocklist() {
  const terms = $("blocklist-terms").value.split("\n").map((s) => s.trim()).filter(Boolean);
  const data = await post("/api/blocklist", { terms }, $("blocklist-result"));
  if (!data) return;
  showBlocklist(data);
  const refused = data.refused.length ? `; refused waiting request ${data.refused.map((id) => `#${id}`).join(", ")}` : "";
  $("blocklist-result").textContent = `saved ${data.terms.length} words${refused}`;
}

const fpsChart = new LineChart($("chart-fps"), { series: [{ name: "out", color: "#6fb8ff" }, { name: "in", color: "#9be38c" }] });
const latencyChart = new LineChart($("chart-latency"), { series: [{ name: "p50", color: "#ffd27f" }, { name: "p99", color: "#ff8f8f" }] });

function renderMetrics(m) {
  fpsChart.push([m.fps_out, m.fps_in]);
  latencyChart.push([m.latency_p50_ms, m.latency_p99_ms]);
  // frames the stream itself lost: the output queue's and the sinks' (an encoder process behind)
  const lost = Object.entries(m.counters || {})
    .filter(([name]) => name === "drops_output" || name.startsWith("drops_sink_"))
    .reduce((sum, [, n]) => sum + n, 0);
  $("fps-now").textContent = `${m.fps_out.toFixed(1)} fps out · ${m.fps_in.toFixed(1)} in` +
    (lost ? ` · ${lost} output frames dropped` : "");
  $("latency-now").textContent = `latency p50 ${m.latency_p50_ms.toFixed(0)} ms · p99 ${m.latency_p99_ms.toFixed(0)} ms`;
  const stages = Object.entries(m.stages || {}).map(([name, s]) => `${name} ${s.p50_ms.toFixed(1)} ms`);
  $("stages").textContent = stages.join(" · ");
}

// ---------------------------------------------------------------- controls

function wire() {
  $("token-entry").addEventListener("submit", async (e) => {
    e.preventDefault();
    const pasted = $("token-input").value.trim();
    $("token-input").value = "";
    sessionStorage.setItem(TOKEN_KEY, pasted); // usable at once; replaced by a session token below
    signedIn();
    if (await signIn(pasted)) signedIn();
  });
  $("prompt-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = $("prompt-input").value.trim();
    if (!text) return;
    if (await post("/api/prompt", { text }, $("prompt-result"))) $("prompt-input").value = "";
  });
  $("kill").addEventListener("click", () => post("/api/kill", {}, $("control-result")));
  $("revive").addEventListener("click", () => post("/api/revive", {}, $("control-result")));
  $("reset").addEventListener("click", () => post("/api/reset", {}, $("control-result")));
  $("strength").addEventListener("input", () => {
    strengthTouched = true;
    $("strength-value").textContent = Number($("strength").value).toFixed(2);
  });
  $("strength-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    await post("/api/strength", { strength: Number($("strength").value) }, $("control-result"));
    strengthTouched = false;
  });
  $("strength-default").addEventListener("click", async () => {
    await post("/api/strength", { strength: null }, $("control-result"));
    strengthTouched = false;
  });
  $("steps-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    await post("/api/steps", { steps: Number($("steps").value) }, $("control-result"));
    stepsTouched = false;
  });
  $("steps").addEventListener("input", () => { stepsTouched = true; });
  $("poll-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const options = $("poll-choices").value.split("\n").map((s) => s.trim()).filter(Boolean);
    post("/api/poll/start", { title: $("poll-question").value.trim(), options, duration_s: Number($("poll-seconds").value) }, $("poll-result"));
  });
  $("poll-end").addEventListener("click", () => post("/api/poll/end", {}, $("poll-result")));
  $("blocklist-form").addEventListener("submit", (e) => {
    e.preventDefault();
    saveBlocklist();
  });
}

showTokenForm(!token() && !/(?:^#|&)code=/.test(location.hash));
wire();
signInFromUrl();
loadBlocklist(); // a tab that signed in earlier
connectLive({
  metrics: true,
  onState: renderState,
  onMetrics: renderMetrics,
  onStatus: (up) => {
    $("conn").textContent = up ? "connected" : "disconnected";
    $("conn").className = `pill ${up ? "ok" : "bad"}`;
  },
});
