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

// A poll as the overlays draw it, whatever the server's field names: {title, options:[{label, votes}], total, endsAt, open, winner}.
export function normalisePoll(poll, receivedAt) {
  if (!poll) return null;
  const options = (poll.options || poll.choices || []).map((o) => (typeof o === "string"
    ? { label: o, votes: 0 }
    : { label: String(o.label ?? o.text ?? o.title ?? ""), votes: Number(o.votes ?? o.count ?? 0) }));
  if (Array.isArray(poll.votes) || (poll.votes && typeof poll.votes === "object")) {
    options.forEach((o, i) => {
      const v = Array.isArray(poll.votes) ? poll.votes[i] : poll.votes[o.label];
      if (v !== undefined) o.votes = Number(v);
    });
  }
  const total = options.reduce((sum, o) => sum + o.votes, 0);
  const remaining = Number(poll.remaining_s ?? poll.ends_in_s ?? NaN);
  const endsAt = Number.isFinite(remaining) ? receivedAt + remaining * 1000 : null;
  const status = String(poll.status ?? (poll.open === false ? "ended" : "open"));
  return { title: String(poll.title ?? poll.question ?? "Poll"), options, total, endsAt,
           open: status === "open" || status === "running" || status === "active",
           winner: poll.winner ?? null };
}

export function formatCountdown(ms) {
  const s = Math.max(0, Math.ceil(ms / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}
