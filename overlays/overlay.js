// Entry point of every overlay page: mounts the widgets whose containers the page has.
import { connectLive } from "./live.js";
import { mountPrompt, mountPoll, mountQueue } from "./widgets.js";

const mounts = [["prompt-widget", mountPrompt], ["poll-widget", mountPoll], ["queue-widget", mountQueue]];
const updates = [];
for (const [id, mount] of mounts) {
  const root = document.getElementById(id);
  if (root) updates.push(mount(root));
}
connectLive({
  onState: (state) => updates.forEach((update) => update(state)),
  onStatus: (up) => document.body.classList.toggle("disconnected", !up),
});
