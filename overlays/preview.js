// Keeps every <img data-stream="/preview.mjpeg"> on the page showing the daemon's live preview, and
// reconnects whenever the stream ends, stalls or is refused (the daemon restarted, a slot is not free
// yet), so OBS's preview source and the dashboard never stay blank for good.
//
// The stream is read with fetch() rather than by the <img> itself: Chromium fires no event when a
// multipart image stream ends or stalls, so only reading the parts here tells a still picture from a
// dead connection. The server repeats its picture every 2 s while the output stands still
// (preview.py KEEPALIVE_S); no part for STALL_MS means the connection is gone.
// `data-pause-hidden` (the dashboard) closes the stream while the tab is hidden, freeing its slot.

const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 10000;
const STALL_MS = 6000;
const MAX_PART_BYTES = 16 * 1024 * 1024; // far above any preview JPEG: more is not a preview stream
const HEAD_END = [13, 10, 13, 10]; // CRLF CRLF ends a part's headers
const latin1 = new TextDecoder("latin1");

function find(buf, pattern, from) {
  outer: for (let i = from; i <= buf.length - pattern.length; i++) {
    for (let j = 0; j < pattern.length; j++) if (buf[i + j] !== pattern[j]) continue outer;
    return i;
  }
  return -1;
}

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

// Reads one multipart/x-mixed-replace response, calling onPart(jpegBytes) per part; returns when the
// server ends the stream, throws on a refusal or a malformed part.
async function readStream(url, signal, onPart) {
  const response = await fetch(url, { cache: "no-store", credentials: "omit", signal });
  if (!response.ok) throw new Error(`preview refused: HTTP ${response.status}`);
  const reader = response.body.getReader();
  let buf = new Uint8Array(0);
  for (;;) {
    let start = 0;
    for (;;) {
      const headEnd = find(buf, HEAD_END, start);
      if (headEnd < 0) break;
      const length = /content-length:\s*(\d+)/i.exec(latin1.decode(buf.subarray(start, headEnd)));
      if (!length) throw new Error("a preview part without Content-Length");
      const end = headEnd + HEAD_END.length + Number(length[1]);
      if (buf.length < end) break;
      onPart(buf.slice(headEnd + HEAD_END.length, end));
      start = end;
    }
    if (start > 0) buf = buf.slice(start);
    if (buf.length > MAX_PART_BYTES) throw new Error("the preview part is too large");
    const { value, done } = await reader.read();
    if (done) return;
    buf = concat(buf, value);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function keepStreaming(img, url, { pauseWhenHidden = false } = {}) {
  let controller = null;
  let shown = null; // the blob: URL on screen, released once the next picture has replaced it

  // "live" is said only once a picture has decoded (naturalWidth is real), and only while its stream
  // is still being read: a load that lands after the stream ended must not undo "reconnecting".
  function show(jpeg, stillStreaming) {
    const next = URL.createObjectURL(new Blob([jpeg], { type: "image/jpeg" }));
    const previous = shown;
    shown = next;
    img.addEventListener("load", () => {
      if (previous) URL.revokeObjectURL(previous);
      if (shown === next && stillStreaming()) img.dataset.state = "live";
    }, { once: true });
    img.src = next;
  }

  async function run() {
    let delay = RETRY_MIN_MS;
    for (;;) {
      while (pauseWhenHidden && document.hidden) await sleep(250);
      controller = new AbortController();
      const mine = controller;
      let lastPart = Date.now();
      let streaming = true;
      const watchdog = setInterval(() => {
        if (Date.now() - lastPart > STALL_MS) mine.abort();
      }, 1000);
      try {
        await readStream(url, mine.signal, (jpeg) => {
          lastPart = Date.now();
          delay = RETRY_MIN_MS; // it worked: the next outage starts again with a short wait
          show(jpeg, () => streaming);
        });
      } catch {
        // refused, unreachable, stalled or aborted: all end in a retry below
      } finally {
        streaming = false;
        clearInterval(watchdog);
      }
      img.dataset.state = "reconnecting";
      img.dataset.reconnects = String(Number(img.dataset.reconnects || 0) + 1);
      await sleep(delay);
      delay = Math.min(delay * 2, RETRY_MAX_MS);
    }
  }

  if (pauseWhenHidden) {
    document.addEventListener("visibilitychange", () => {
      if (document.hidden && controller) controller.abort();
    });
  }
  run();
}

for (const img of document.querySelectorAll("img[data-stream]")) {
  keepStreaming(img, img.dataset.stream, { pauseWhenHidden: "pauseHidden" in img.dataset });
}
