// Following a run's Server-Sent Events with the API token. EventSource cannot send an Authorization header,
// so this reads the stream with fetch() and parses it; after a dropped connection it reconnects with
// `Last-Event-ID` (the id of the last event seen), and the server replays exactly what was missed.

import { send } from "./api.js";

/**
 * follow(path, onEvent, {onState}) -> stop(). `onEvent({id, event, data})` with data parsed from JSON;
 * `onState("connecting" | "open" | "reconnecting" | "ended")`. The stream ends when the server closes it after
 * the run's final `end` event; any other close reconnects after a short, growing delay.
 */
export function follow(path, onEvent, { onState = () => {}, retryMs = 1000, maxRetryMs = 10_000 } = {}) {
  const controller = new AbortController();
  let lastId = null;
  let ended = false;
  let delay = retryMs;

  const run = async () => {
    onState("connecting");
    while (!controller.signal.aborted && !ended) {
      try {
        const headers = { Accept: "text/event-stream" };
        if (lastId !== null) headers["Last-Event-ID"] = String(lastId);
        const response = await send(path, { headers, signal: controller.signal });
        onState("open");
        delay = retryMs;
        await readEvents(response.body, (event) => {
          if (event.id !== null) lastId = event.id;
          if (event.event === "end") ended = true;
          onEvent(event);
        });
        if (ended) break;
      } catch (error) {
        if (controller.signal.aborted) return;
        if (error && error.status && error.status >= 400 && error.status < 500) { onState("ended", error); return; }
      }
      if (controller.signal.aborted || ended) break;
      onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, maxRetryMs);
    }
    if (!controller.signal.aborted) onState("ended");
  };
  run();
  return () => controller.abort();
}

/** Parse an SSE byte stream (fields `id`, `event`, `data`; comment lines ignored). */
async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let boundary;
    while ((boundary = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, boundary);
      buffer = buffer.slice(boundary + 2);
      const event = parseBlock(block);
      if (event) onEvent(event);
    }
  }
}

function parseBlock(block) {
  let id = null;
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const key = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (key === "id") id = Number.isNaN(Number(value)) ? value : Number(value);
    else if (key === "event") name = value;
    else if (key === "data") data.push(value);
  }
  if (!data.length && id === null) return null;
  const text = data.join("\n");
  let parsed = text;
  try { parsed = JSON.parse(text); } catch { /* plain text */ }
  return { id, event: name, data: parsed };
}
