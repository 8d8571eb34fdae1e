// Shared by the overlays and the dashboard: a read-only WebSocket to /ws on this origin that
// reconnects with backoff, plus DOM helpers. Text that may come from chat is only ever set through
// textContent (never innerHTML), so markup in it is shown literally and can run nothing.

export function connectLive({ metrics = false, onState = () => {}, onMetrics = () => {}, onStatus = () => {} }) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${location.host}/ws${metrics ? "" : "?metrics=0"}`;
  let delay = 500;
  let socket = null;
  function open() {
    socket = new WebSocket(url);
    socket.addEventListener("open", () => { delay = 500; onStatus(true); });
    socket.addEventListener("message", (event) => {
      let msg;
      try { msg = JSON.parse(event.data); } catch { return; }
      if (msg.type === "state") onState(msg);
      else if (msg.type === "metrics") onMetrics(msg);
    });
    socket.addEventListener("close", () => {
      onStatus(false);
      setTimeout(open, delay);
      delay = Math.min(delay * 2, 10000);
    });
  }
  open();
  return () => socket && socket.close();
}

// <tag class=className>text</tag>, the text set as plain text.
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

// A poll as the overlays draw it: {title, options:[{label, votes}], total, endsAt, open, winner}.
// The server sends ends_at and its own clock (server_time); endsAt is in this page's
// performance.now() time, so a wrong clock on the viewer's machine cannot skew the countdown.
export function normalisePoll(poll, serverTime, receivedAt) {
  if (!poll) return null;
  const options = (poll.choices || []).map((c) => ({ label: String(c.text ?? ""), votes: Number(c.votes ?? 0) }));
  const total = options.reduce((sum, o) => sum + o.votes, 0);
  const endsAt = Number.isFinite(poll.ends_at) && Number.isFinite(serverTime)
    ? receivedAt + (poll.ends_at - serverTime) * 1000 : null;
  return { title: String(poll.title ?? "Poll"), options, total, endsAt, open: poll.status === "running",
           status: String(poll.status ?? ""),
           winner: poll.winner_text || null, result: String(poll.result ?? "") };
}

export function formatCountdown(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}
