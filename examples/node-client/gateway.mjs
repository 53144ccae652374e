// Calls a provider through the daemon's gateway with plain `fetch`, one JSON line per step:
//
//   PI_COORDINATOR_ADDR=127.0.0.1:8765 OPENAI_API_KEY=sk-... node gateway.mjs
//
// Registers (so the calls are this instance's: its priority and reservation apply), sends a
// chat completion, then a streamed one read chunk by chunk as it arrives, and unregisters.
// The API key goes to the provider in `Authorization`, as without the gateway; the daemon's
// token, when it has one (PI_COORDINATOR_TOKEN), goes in `X-Pi-Token`. A 429 from the
// gateway (no permit within its bound) is the provider's own shape, with `Retry-After`.
//
// Optional: PI_INSTANCE_ID (default node-gateway-<pid>), GATEWAY_PROVIDER (default openai),
// GATEWAY_MODEL (default gpt-4o-mini).

import { Coordinator } from "./client.mjs";

const provider = process.env.GATEWAY_PROVIDER || "openai";
const model = process.env.GATEWAY_MODEL || "gpt-4o-mini";

/** @param {string} step @param {Record<string, unknown>} [fields] */
function say(step, fields = {}) {
  process.stdout.write(`${JSON.stringify({ step, ...fields })}\n`);
}

const coord = new Coordinator({
  addr: process.env.PI_COORDINATOR_ADDR,
  token: process.env.PI_COORDINATOR_TOKEN,
});
await coord.register({ instanceId: process.env.PI_INSTANCE_ID || `node-gateway-${process.pid}` });
say("registered", { instanceId: coord.instanceId });
const url = `${coord.gatewayBaseUrl(provider)}/chat/completions`;
const headers = {
  "Content-Type": "application/json",
  Authorization: `Bearer ${process.env.OPENAI_API_KEY ?? ""}`,
  ...coord.gatewayHeaders(),
};
const messages = [{ role: "user", content: "Say hello" }];
try {
  const reply = await fetch(url, {
    method: "POST", headers, body: JSON.stringify({ model, messages, max_tokens: 8 }),
  });
  const body = await reply.json();
  say("completion", { status: reply.status, text: body.choices?.[0]?.message?.content ?? null,
                      usage: body.usage ?? null, retryAfter: reply.headers.get("retry-after") });

  const streamed = await fetch(url, {
    method: "POST", headers,
    body: JSON.stringify({ model, messages, max_tokens: 8, stream: true,
                           stream_options: { include_usage: true } }),
  });
  const decoder = new TextDecoder();
  let text = "";
  let chunks = 0;
  let buffered = "";
  for await (const piece of streamed.body) {
    chunks += 1;
    buffered += decoder.decode(piece, { stream: true });
    let end;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const event = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      const data = event.split("\n").find((line) => line.startsWith("data: "))?.slice(6);
      if (!data || data === "[DONE]") continue;
      text += JSON.parse(data).choices?.[0]?.delta?.content ?? "";
    }
  }
  say("stream", { status: streamed.status, text, chunks,
                  contentType: streamed.headers.get("content-type") });
} finally {
  await coord.unregister();
  say("unregistered");
}
