// The three overlay widgets. Each mount* builds its DOM inside a container and returns
// update(state). Chat-supplied text (prompts, authors, poll options) only goes in via textContent.
import { el, clear, normalisePoll, formatCountdown } from "./live.js";

export function mountPrompt(root) {
  const card = el("div", "card prompt-card hidden");
  const label = el("div", "label", "AI prompt");
  const stage = el("div", "prompt-stage");
  const oldText = el("div", "prompt-text prompt-old");
  const newText = el("div", "prompt-text prompt-new");
  newText.id = "prompt-text";
  const by = el("div", "prompt-by");
  by.id = "prompt-by";
  const progress = el("div", "progress");
  const fill = el("div", "progress-fill");
  progress.append(fill);
  stage.append(oldText, newText);
  card.append(label, stage, by, progress);
  root.append(card);
  let version = -1;
  return (state) => {
    const p = state.prompt;
    card.classList.toggle("hidden", !p || !p.text);
    if (!p) return;
    card.classList.toggle("off", !p.enabled);
    label.textContent = p.enabled ? "AI prompt" : "AI off";
    if (p.version === version) return;
    const changed = version !== -1 && newText.textContent !== p.text;
    version = p.version;
    oldText.textContent = changed ? newText.textContent : "";
    newText.textContent = p.text;
    by.textContent = p.author && p.source !== "config" ? `by ${p.author} (${p.source})` : "";
    if (changed) {
      // restart the CSS animations: remove the class, force a reflow, add it back
      card.classList.remove("transition");
      void card.offsetWidth;
      card.classList.add("transition");
    }
  };
}

export function mountPoll(root) {
  const card = el("div", "card poll-card hidden");
  const head = el("div", "poll-head");
  const title = el("div", "poll-title");
  title.id = "poll-title";
  const countdown = el("div", "poll-countdown");
  countdown.id = "poll-countdown";
  head.append(title, countdown);
  const list = el("div", "poll-options");
  list.id = "poll-options";
  const footer = el("div", "poll-footer");
  card.append(head, list, footer);
  root.append(card);
  let poll = null;
  setInterval(() => {
    if (poll && poll.open && poll.endsAt !== null) countdown.textContent = formatCountdown(poll.endsAt - performance.now());
  }, 250);
  return (state) => {
    poll = normalisePoll(state.poll, state.server_time, performance.now());
    card.classList.toggle("hidden", !poll);
    if (!poll) return;
    title.textContent = poll.title;
    countdown.textContent = poll.open
      ? (poll.endsAt !== null ? formatCountdown(poll.endsAt - performance.now()) : "")
      : poll.status;
    footer.textContent = poll.open ? `${poll.total} vote${poll.total === 1 ? "" : "s"}`
      : (poll.winner ? `Winner: ${poll.winner}` : (poll.result || `${poll.total} votes`));
    const rows = list.children;
    if (rows.length !== poll.options.length) {
      clear(list);
      poll.options.forEach(() => {
        const row = el("div", "poll-option");
        const labelRow = el("div", "poll-label-row");
        labelRow.append(el("span", "poll-label"), el("span", "poll-share"));
        const bar = el("div", "poll-bar");
        bar.append(el("div", "poll-bar-fill"));
        row.append(labelRow, bar);
        list.append(row);
      });
    }
    poll.options.forEach((option, i) => {
      const row = rows[i];
      const share = poll.total ? Math.round((100 * option.votes) / poll.total) : 0;
      row.querySelector(".poll-label").textContent = option.label;
      row.querySelector(".poll-share").textContent = `${share}% (${option.votes})`;
      row.querySelector(".poll-bar-fill").style.width = `${share}%`;  // CSSOM, allowed by the CSP
      row.dataset.votes = String(option.votes);
    });
  };
}

// The approval queue as the stream may see it: the server sends only how many wait and, with
// [dashboard] overlay_queue = "names", who asked; a request's text appears on stream only once a
// moderator approved it (as the prompt). "off" hides the card.
export function mountQueue(root, { limit = 5 } = {}) {
  const card = el("div", "card queue-card hidden");
  const label = el("div", "label", "Waiting for a moderator");
  const count = el("div", "queue-count");
  count.id = "queue-count";
  const list = el("ol", "queue-list");
  list.id = "queue-list";
  card.append(label, count, list);
  root.append(card);
  return (state) => {
    const q = state.queue && typeof state.queue === "object" ? state.queue : {};
    const waiting = Number.isFinite(q.count) ? q.count : 0;
    card.classList.toggle("hidden", q.shown === "off" || waiting === 0);
    count.textContent = `${waiting} request${waiting === 1 ? "" : "s"}`;
    clear(list);
    if (q.shown !== "names" || !Array.isArray(q.names)) return;
    for (const item of q.names.slice(0, limit)) list.append(el("li", "queue-item queue-author", item.author ?? ""));
    if (waiting > limit) list.append(el("li", "queue-more", `+${waiting - limit} more`));
  };
}
