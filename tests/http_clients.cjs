// The npm clients against herdd (tests/http_clients.sh): every call goes
// through the library's own request and stream parsing. Asserts shapes
// and counts that hold for any model; exits non-zero on the first failure.
"use strict";
const path = require("path");
const assert = require("assert");
const mod = (p) => require(path.join(process.env.NPM_DIR, "node_modules", p));
const OpenAI = mod("openai");
const { Ollama } = mod("ollama");

const url = process.env.HTTP_URL, model = process.env.MODEL, token = process.env.HERD_TOKEN;
let passed = 0, failed = 0;

async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log("ok   " + name);
  } catch (e) {
    failed++;
    console.log("FAIL " + name + ": " + (e && e.stack ? e.stack : e));
  }
}

async function openaiTests() {
  const client = new OpenAI({ baseURL: url + "/v1", apiKey: token, maxRetries: 0, timeout: 120000 });
  await check("openai models.list", async () => {
    const list = await client.models.list();
    assert.ok(list.data.some((m) => m.id === model));
  });
  await check("openai chat.completions non-streaming", async () => {
    const r = await client.chat.completions.create({ model, max_tokens: 5, temperature: 0, seed: 3,
      messages: [{ role: "system", content: "You are terse." }, { role: "user", content: "Say hi" }] });
    assert.strictEqual(r.object, "chat.completion");
    assert.strictEqual(r.choices[0].message.role, "assistant");
    assert.strictEqual(typeof r.choices[0].message.content, "string");
    assert.strictEqual(r.choices[0].finish_reason, "length");
    assert.strictEqual(r.usage.completion_tokens, 5);
    assert.strictEqual(r.usage.total_tokens, r.usage.prompt_tokens + 5);
  });
  await check("openai chat.completions streaming", async () => {
    const stream = await client.chat.completions.create({ model, max_tokens: 6, temperature: 0, stream: true,
      stream_options: { include_usage: true }, messages: [{ role: "user", content: "Count" }] });
    let text = "", finish = null, usage = null, chunks = 0;
    for await (const c of stream) {
      chunks++;
      if (c.usage) usage = c.usage;
      for (const ch of c.choices) {
        text += ch.delta.content || "";
        if (ch.finish_reason) finish = ch.finish_reason;
      }
    }
    assert.ok(chunks >= 3, "chunks " + chunks);
    assert.strictEqual(finish, "length");
    assert.strictEqual(usage.completion_tokens, 6);
    /* the same greedy request, not streamed, says the same */
    const whole = await client.chat.completions.create({ model, max_tokens: 6, temperature: 0,
      messages: [{ role: "user", content: "Count" }] });
    assert.strictEqual(text, whole.choices[0].message.content);
  });
  await check("openai completions with stop, top_p, seed", async () => {
    const r = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 8,
      temperature: 0.7, top_p: 0.9, seed: 42, stop: ["\n\n\n"] });
    assert.strictEqual(r.object, "text_completion");
    assert.ok(["stop", "length"].includes(r.choices[0].finish_reason));
    const again = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 8,
      temperature: 0.7, top_p: 0.9, seed: 42, stop: ["\n\n\n"] });
    assert.strictEqual(again.choices[0].text, r.choices[0].text, "a fixed seed repeats");
  });
  await check("openai completions streaming", async () => {
    const stream = await client.completions.create({ model, prompt: "The weather", max_tokens: 4, stream: true });
    let n = 0, finish = null;
    for await (const c of stream) { n++; if (c.choices[0].finish_reason) finish = c.choices[0].finish_reason; }
    assert.ok(n >= 2);
    assert.strictEqual(finish, "length");
  });
  await check("openai errors: a bad field, an unknown model, a wrong key", async () => {
    await assert.rejects(client.chat.completions.create({ model, messages: [{ role: "user", content: "x" }],
      temperature: 9 }), (e) => e.status === 400 && /temperature/.test(e.message));
    await assert.rejects(client.chat.completions.create({ model: "no-such-model",
      messages: [{ role: "user", content: "x" }] }), (e) => e.status === 404);
    const bad = new OpenAI({ baseURL: url + "/v1", apiKey: "wrong-key-0123456789", maxRetries: 0 });
    await assert.rejects(bad.models.list(), (e) => e.status === 401);
  });
}

async function ollamaTests() {
  const ollama = new Ollama({ host: url, headers: { Authorization: "Bearer " + token } });
  await check("ollama list / ps / show", async () => {
    const tags = await ollama.list();
    assert.ok(tags.models.some((m) => m.name === model + ":latest"));
    const ps = await ollama.ps();
    assert.ok(ps.models.length >= 1);
    const show = await ollama.show({ model });
    assert.ok(show.model_info["llama.context_length"] > 0);
  });
  await check("ollama generate non-streaming", async () => {
    const r = await ollama.generate({ model, prompt: "Hello", stream: false, options: { num_predict: 5, temperature: 0 } });
    assert.strictEqual(r.done, true);
    assert.strictEqual(r.eval_count, 5);
    assert.strictEqual(typeof r.response, "string");
  });
  await check("ollama generate streaming", async () => {
    const it = await ollama.generate({ model, prompt: "Hello", stream: true, options: { num_predict: 5, temperature: 0 } });
    let text = "", last = null;
    for await (const part of it) { text += part.response; last = part; }
    assert.strictEqual(last.done, true);
    assert.strictEqual(last.eval_count, 5);
    const whole = await ollama.generate({ model, prompt: "Hello", stream: false, options: { num_predict: 5, temperature: 0 } });
    assert.strictEqual(text, whole.response);
  });
  await check("ollama chat streaming and not", async () => {
    const msgs = [{ role: "user", content: "Tell me a story" }];
    const it = await ollama.chat({ model, messages: msgs, stream: true, options: { num_predict: 4, seed: 9 } });
    let n = 0, last = null;
    for await (const part of it) { n++; last = part; assert.strictEqual(part.message.role, "assistant"); }
    assert.ok(n >= 2 && last.done);
    const r = await ollama.chat({ model, messages: msgs, stream: false, options: { num_predict: 4, seed: 9 } });
    assert.strictEqual(r.done, true);
    assert.strictEqual(r.message.role, "assistant");
  });
  await check("ollama error for an unknown model", async () => {
    await assert.rejects(ollama.generate({ model: "missing", prompt: "x", stream: false }),
      (e) => /not found/.test(e.message));
  });
}

(async () => {
  await openaiTests();
  await ollamaTests();
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})();
