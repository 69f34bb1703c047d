// The demo page (nginx-conf/demo-www) and pushstream-client.js in real headless Chromium,
// against nginx with the module and nginx-conf/demo.conf. Run by ci/test-browser, which starts
// nginx and passes:
//   PUSH_STREAM_URL   http://127.0.0.1:PORT of the demo
//   NGINX_PID         the nginx master's pid (the reload tests send it SIGHUP)
//   SCREENSHOT_DIR    where to write the PNG screenshots (optional)
//   CHROMIUM          the browser binary (default /usr/bin/chromium)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.PUSH_STREAM_URL;
const NGINX_PID = Number(process.env.NGINX_PID);
const SHOTS = process.env.SCREENSHOT_DIR || '';
const TRANSPORTS = ['eventsource', 'websocket', 'longpolling'];
if (!BASE || !NGINX_PID) throw new Error('set PUSH_STREAM_URL and NGINX_PID (ci/test-browser does)');

let browser;
before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 30000,
  });
});
after(async () => { if (browser) await browser.close(); });

// One HTTP request on its own connection (no keep-alive: a reload must not catch a reused one).
function request(method, urlPath, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(BASE + urlPath, { method, agent: false, timeout: 10000 }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { data += c; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: data }));
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${urlPath}: timeout`)));
    req.on('error', reject);
    req.end(body);
  });
}

async function publish(channel, text) {
  const r = await request('POST', `/pub?id=${encodeURIComponent(channel)}`, text);
  assert.equal(r.status, 200, `publish to ${channel}: ${r.status} ${r.body}`);
  return JSON.parse(r.body);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const uniq = (name) => `${name}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 7)}`;

// The comments the page shows, oldest first.
function shown(page) {
  return page.$$eval('#comments li', (lis) => lis.map((li) => ({
    text: li.querySelector('.text').textContent,
    id: Number(li.dataset.id),
    channel: li.dataset.channel,
    transport: li.dataset.transport,
  })).reverse());
}

// Waits until the page shows exactly `texts` (in order); fails with what it shows.
async function expectTexts(page, texts, timeout = 15000) {
  const deadline = Date.now() + timeout;
  let got = [];
  while (Date.now() < deadline) {
    got = (await shown(page)).map((m) => m.text);
    if (got.length >= texts.length) break;
    await sleep(100);
  }
  assert.deepEqual(got, texts);
}

async function openDemo(query) {
  const page = await browser.newPage({ viewport: { width: 760, height: 560 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const posts = [];
  const subscribes = [];   // every subscriber request: {url, headers}
  page.on('request', (r) => {
    if (r.method() === 'POST') posts.push(r.url());
    if (/\/(ev|lp)\//.test(r.url())) subscribes.push({ url: r.url(), headers: r.headers() });
  });
  page.on('websocket', (ws) => subscribes.push({ url: ws.url(), headers: {} }));
  await page.goto(`${BASE}/?${query}`, { timeout: 15000 });
  return { page, errors, posts, subscribes };
}

async function status(page) {
  return page.$eval('#state', (s) => ({ status: s.dataset.status, transport: s.dataset.transport }));
}

async function workerPids() {
  const r = await request('GET', '/channels-stats');
  assert.equal(r.status, 200);
  return JSON.parse(r.body).by_worker.map((w) => w.pid).sort().join(',');
}

const SPECIAL = 'quote " backslash \\ <b>not bold</b> ünïcödé 😀 }{';

for (const transport of TRANSPORTS) {
  test(`the demo page receives messages over ${transport}`, { timeout: 60000 }, async () => {
    const channel = uniq(transport);
    await publish(channel, 'stored before the page opened');
    const { page, errors, posts } = await openDemo(`transport=${transport}&channel=${channel}`);
    try {
      await expectTexts(page, ['stored before the page opened']);
      assert.deepEqual(await status(page), { status: 'open', transport });

      for (const text of [SPECIAL, 'two\nlines', 'third']) await publish(channel, text);
      await expectTexts(page, ['stored before the page opened', SPECIAL, 'two\nlines', 'third']);

      // Publishing from the page: a WebSocket frame over WebSocket, a POST otherwise.
      await page.fill('#text', `posted from the page over ${transport}`);
      await page.click('form button');
      await expectTexts(page, ['stored before the page opened', SPECIAL, 'two\nlines', 'third',
        `posted from the page over ${transport}`]);
      const pagePosts = posts.filter((u) => u.includes('/pub?'));
      assert.equal(pagePosts.length, transport === 'websocket' ? 0 : 1, pagePosts.join(' '));

      const msgs = await shown(page);
      assert.deepEqual(msgs.map((m) => m.id), [1, 2, 3, 4, 5]);
      assert.ok(msgs.every((m) => m.transport === transport && m.channel === channel));
      const info = JSON.parse((await request('GET', `/channels-stats?id=${channel}`)).body);
      assert.equal(info.published_messages, 5);   // the WebSocket publish was stored too
      assert.deepEqual(errors, []);

      if (SHOTS) {
        fs.mkdirSync(SHOTS, { recursive: true });
        await page.screenshot({ path: path.join(SHOTS, `demo-${transport}.png`) });
      }
    } finally {
      await page.close();
    }
  });
}

for (const transport of TRANSPORTS) {
  test(`${transport}: reconnects after nginx -s reload and shows every message once`, { timeout: 90000 }, async () => {
    const channel = uniq(`reload-${transport}`);
    const { page, errors, subscribes } = await openDemo(`transport=${transport}&channel=${channel}`);
    try {
      if (transport !== 'longpolling') {   // a long-poll is "open" once its first answer came
        const deadline = Date.now() + 10000;
        while ((await status(page)).status !== 'open' && Date.now() < deadline) await sleep(100);
      }
      await publish(channel, 'm0');
      await expectTexts(page, ['m0']);

      const pidsBefore = await workerPids();
      const requestsBefore = subscribes.length;
      process.kill(NGINX_PID, 'SIGHUP');   // nginx -s reload: every subscriber is disconnected
      const expected = ['m0'];
      for (let i = 1; i <= 12; i++) {        // during and after the reload
        await publish(channel, `m${i}`);
        expected.push(`m${i}`);
        await sleep(150);
      }
      await expectTexts(page, expected, 30000);
      await sleep(1500);                     // nothing arrives twice later either
      await expectTexts(page, expected, 1000);

      const msgs = await shown(page);
      assert.deepEqual(msgs.map((m) => m.id), expected.map((_, i) => i + 1));
      assert.ok(msgs.every((m) => m.transport === transport));
      assert.notEqual(await workerPids(), pidsBefore, 'the workers were replaced by the reload');
      // The requests after the reload resume from the last message instead of backtracking.
      const resumed = subscribes.slice(requestsBefore);
      assert.ok(resumed.length > 0, 'no new subscriber request after the reload');
      for (const r of resumed) {
        assert.ok(!/\.b\d+/.test(r.url), `backtrack on a resumed request: ${r.url}`);
        if (transport === 'longpolling') {
          assert.match(r.headers['if-none-match'] || '', /^W\/\d+$/, JSON.stringify(r.headers));
          assert.ok(Date.parse(r.headers['if-modified-since']), JSON.stringify(r.headers));
        } else {
          assert.match(r.url, /[?&]time=[^&]+&tag=\d+/, r.url);
        }
      }
      const log = await page.evaluate(() => window.pushStreamDemo.statusLog);
      if (transport !== 'longpolling') {
        // The server ended the connection; the client reconnected on the same transport.
        assert.ok(log.includes(`reconnecting ${transport}`), log.join(', '));
      }
      assert.equal((await status(page)).status, 'open', log.join(', '));
      assert.deepEqual(errors, []);
    } finally {
      await page.close();
    }
  });
}

test('without ?transport the page uses EventSource; the client falls back when a transport fails', { timeout: 60000 }, async () => {
  const channel = uniq('fallback');
  await publish(channel, 'first');
  const { page, errors } = await openDemo(`channel=${channel}`);
  try {
    await expectTexts(page, ['first']);
    assert.deepEqual(await status(page), { status: 'open', transport: 'eventsource' });

    // EventSource (404) and WebSocket (404, no upgrade) fail before opening: long-polling.
    const got = await page.evaluate(async (ch) => {
      const log = [];
      const result = await new Promise((resolve, reject) => {
        const c = new PushStreamClient({
          channels: [{ name: ch, backtrack: 1 }],
          prefixes: { eventsource: '/no-such-ev', websocket: '/no-such-ws' },
          onstatus: (s, t) => log.push(`${s} ${t}`),
          onmessage: (m) => { c.disconnect(); resolve({ text: m.text, transport: m.transport }); },
        });
        c.connect();
        setTimeout(() => reject(new Error('no message: ' + log.join(', '))), 15000);
      });
      return { result, log };
    }, channel);
    assert.deepEqual(got.result, { text: 'first', transport: 'longpolling' });
    assert.deepEqual(got.log.slice(0, 3), ['connecting eventsource', 'connecting websocket', 'connecting longpolling']);

    // Only EventSource broken: WebSocket.
    const ws = await page.evaluate(async (ch) => new Promise((resolve, reject) => {
      const c = new PushStreamClient({
        channels: [{ name: ch, backtrack: 1 }],
        prefixes: { eventsource: '/no-such-ev' },
        onmessage: (m) => { c.disconnect(); resolve(m.transport); },
      });
      c.connect();
      setTimeout(() => reject(new Error('no message')), 15000);
    }), channel);
    assert.equal(ws, 'websocket');
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
  }
});
