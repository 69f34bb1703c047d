/*
 * pushstream-client.js: a small browser client for ngx-push-stream (plain JavaScript, no build
 * step, no dependencies). It subscribes over EventSource, WebSocket or long-polling, falls back
 * to the next transport when one cannot connect, reconnects after the server ends the connection
 * (nginx -s reload disconnects every subscriber) and resumes after the last message it received,
 * so nothing is lost and nothing is shown twice. It also publishes.
 *
 *   const client = new PushStreamClient({
 *     channels: ['comments'],           // or [{name: 'comments', backtrack: 20}]
 *     backtrack: 20,                    // default backtrack of the first connection (.b20)
 *     transports: ['eventsource', 'websocket', 'longpolling'],   // tried in this order
 *     onmessage(msg) { ... },          // {id, channel, text, tag, time, eventid, transport}
 *     onstatus(status, transport) { ... },   // 'connecting' | 'open' | 'reconnecting' | 'closed'
 *   });
 *   client.connect();
 *   client.send('hello');               // WebSocket frame when connected over WebSocket, else POST
 *   client.publish('hello', 'comments'); // always POST /pub?id=comments
 *
 * Server side (see nginx-conf/demo.conf): /ev/, /ws/ and /lp/ subscriber locations whose message
 * template is a JSON object with the stock pushstream.js keys, using the JSON-safe tokens:
 *   {"id":~id~,"channel":"~channel-json~","text":"~text-json~","tag":"~tag~","time":"~time~","eventid":"~event-id-json~"}
 * (the long-polling one ends with a newline so that a batch has one message per line), and
 *   push_stream_last_received_message_time $arg_time;   (on /ev/ and /ws/)
 *   push_stream_last_received_message_tag  $arg_tag;
 *
 * Resuming: every message carries its publish time and tag, which strictly increase within a
 * channel. After a disconnect the client reconnects without the .bN backtrack of the channels it
 * has already received something on and asks for the messages after the newest (time, tag) it
 * saw: as ?time=&tag= arguments for EventSource and WebSocket, as If-Modified-Since and
 * If-None-Match: W/tag headers for long-polling (the headers the module reads by default). This
 * works for every publisher, also those that set no Event-Id. Messages are deduplicated by
 * (channel, id, time) in case a resume overlaps.
 */
(function (root) {
  'use strict';

  var TRANSPORTS = ['eventsource', 'websocket', 'longpolling'];
  var DEFAULT_PREFIXES = { eventsource: '/ev', websocket: '/ws', longpolling: '/lp', publisher: '/pub' };

  function PushStreamClient(options) {
    if (!(this instanceof PushStreamClient)) return new PushStreamClient(options);
    options = options || {};
    var loc = root.location || { protocol: 'http:', host: 'localhost' };
    this.host = options.host || loc.host;
    this.secure = options.secure != null ? !!options.secure : loc.protocol === 'https:';
    this.prefixes = {};
    for (var k in DEFAULT_PREFIXES) this.prefixes[k] = (options.prefixes && options.prefixes[k]) || DEFAULT_PREFIXES[k];
    this.transports = (options.transports || TRANSPORTS).filter(function (t) {
      if (TRANSPORTS.indexOf(t) < 0) throw new Error('PushStreamClient: unknown transport ' + t);
      return true;
    });
    if (!this.transports.length) throw new Error('PushStreamClient: no transport');
    this.backtrack = options.backtrack || 0;
    this.channels = (options.channels || []).map(function (c) {
      var ch = typeof c === 'string' ? { name: c } : { name: c.name, backtrack: c.backtrack };
      if (!/^[A-Za-z0-9_.\-~@]+$/.test(ch.name || '')) throw new Error('PushStreamClient: channel name must be URL-safe: ' + ch.name);
      return ch;
    });
    if (!this.channels.length) throw new Error('PushStreamClient: no channel');
    this.onmessage = options.onmessage || function () {};
    this.onstatus = options.onstatus || function () {};
    this.onchanneldeleted = options.onchanneldeleted || function () {};
    this.onerror = options.onerror || function () {};
    this.eventTypes = options.eventTypes || [];   // EventSource event types besides 'message'
    this.longPollTimeout = options.longPollTimeout || 60000;   // > push_stream_longpolling_connection_ttl
    this.reconnectDelay = options.reconnectDelay || 500;        // first retry; doubles up to maxReconnectDelay
    this.maxReconnectDelay = options.maxReconnectDelay || 10000;

    this.transport = null;        // the transport in use (or being tried)
    this.status = 'closed';
    this._statusTransport = null;
    this._index = 0;              // position in this.transports
    this._everOpened = false;     // once a transport opened, the client sticks to it
    this._conn = null;            // the live connection's close function
    this._timer = null;
    this._delay = this.reconnectDelay;
    this._last = {};              // channel -> {time: ms, timeText, tag}: newest message seen
    this._seen = {};              // dedup keys
    this._seenOrder = [];
    this._generation = 0;         // invalidates callbacks of connections that were replaced
  }

  PushStreamClient.prototype.connect = function () {
    this.disconnect();
    this._index = 0;
    this._everOpened = false;
    this._open();
    return this;
  };

  PushStreamClient.prototype.disconnect = function () {
    this._generation++;
    clearTimeout(this._timer);
    this._timer = null;
    if (this._conn) { var c = this._conn; this._conn = null; c(); }
    this._setStatus('closed');
  };

  // The last (time, tag) seen per channel: what a reconnect resumes from.
  PushStreamClient.prototype.resumeState = function () {
    var out = {};
    for (var c in this._last) out[c] = { time: this._last[c].timeText, tag: this._last[c].tag };
    return out;
  };

  /* ---------------------------------------------------------------- publishing */

  // POST text to one channel (default: the first subscribed) or to several ('a/b').
  PushStreamClient.prototype.publish = function (text, channel, headers) {
    var id = channel || this.channels[0].name;
    var url = this._httpBase() + this.prefixes.publisher + '?id=' + encodeURIComponent(id);
    var h = { 'Content-Type': 'text/plain; charset=utf-8' };
    for (var k in (headers || {})) h[k] = headers[k];
    return fetch(url, { method: 'POST', body: String(text), headers: h, cache: 'no-store' }).then(function (res) {
      if (!res.ok) {
        var explain = res.headers.get('X-Nginx-PushStream-Explain');
        throw new Error('publish failed: ' + res.status + (explain ? ' ' + explain : ''));
      }
      return res.text().then(function (body) { try { return JSON.parse(body); } catch (e) { return body; } });
    });
  };

  // Over WebSocket: a text frame (the /ws/ location needs push_stream_websocket_allow_publish on;
  // it goes to every channel of the connection). Otherwise a POST to every subscribed channel.
  PushStreamClient.prototype.send = function (text) {
    if (this.transport === 'websocket' && this._ws && this._ws.readyState === 1) {
      this._ws.send(String(text));
      return Promise.resolve(null);
    }
    return this.publish(text, this.channels.map(function (c) { return c.name; }).join('/'));
  };

  /* ---------------------------------------------------------------- internals */

  PushStreamClient.prototype._setStatus = function (status) {
    if (this.status === status && this._statusTransport === this.transport) return;
    this.status = status;
    this._statusTransport = this.transport;
    try { this.onstatus(status, this.transport); } catch (e) { /* the app's problem */ }
  };

  PushStreamClient.prototype._httpBase = function () {
    return (this.secure ? 'https://' : 'http://') + this.host;
  };

  // /ch1.b20/ch2: backtrack only for channels nothing was received on yet.
  PushStreamClient.prototype._channelsPath = function () {
    var self = this;
    return this.channels.map(function (c) {
      var n = c.backtrack != null ? c.backtrack : self.backtrack;
      return '/' + c.name + (n > 0 && !self._last[c.name] ? '.b' + n : '');
    }).join('');
  };

  // Where a reconnect resumes: the server takes one (time, tag) per request and applies it to
  // every channel without a backtrack. With one channel that is its newest message; with
  // several, the oldest of their newest ones, so that no channel misses a message (the dedup
  // drops what the others get twice).
  PushStreamClient.prototype._resumePoint = function () {
    var best = null;
    for (var c in this._last) {
      var l = this._last[c];
      if (!best || l.time < best.time || (l.time === best.time && l.tag < best.tag)) best = l;
    }
    return best;
  };

  PushStreamClient.prototype._query = function () {
    var p = this._resumePoint();
    var q = '_=' + Date.now();
    if (p) q += '&time=' + encodeURIComponent(p.timeText) + '&tag=' + p.tag;
    return q;
  };

  PushStreamClient.prototype._open = function () {
    var self = this;
    var gen = ++this._generation;
    this.transport = this.transports[this._index];
    this._setStatus(this._everOpened ? 'reconnecting' : 'connecting');
    var cb = {
      live: function () { return gen === self._generation; },
      opened: function () {
        if (!cb.live()) return;
        self._everOpened = true;
        self._delay = self.reconnectDelay;
        self._setStatus('open');
      },
      data: function (text) { if (cb.live()) self._handleData(text); },
      // The connection ended. neverOpened: it failed before it was ever established.
      ended: function (neverOpened, why) {
        if (!cb.live()) return;
        self._generation++;
        self._conn = null;
        if (why) { try { self.onerror(why, self.transport); } catch (e) { /* ignore */ } }
        if (neverOpened && !self._everOpened && self._index + 1 < self.transports.length) {
          self._index++;           // fall back to the next transport at once
          self._open();
          return;
        }
        if (neverOpened && !self._everOpened) self._index = 0;   // start the list again later
        self._setStatus('reconnecting');
        var delay = self._delay;
        self._delay = Math.min(self._delay * 2, self.maxReconnectDelay);
        self._timer = setTimeout(function () { self._timer = null; self._open(); }, delay);
      }
    };
    try {
      this._conn = this['_open_' + this.transport](cb);
    } catch (e) {
      cb.ended(true, e);
    }
  };

  PushStreamClient.prototype._open_eventsource = function (cb) {
    if (typeof root.EventSource !== 'function') throw new Error('EventSource is not supported');
    var url = this._httpBase() + this.prefixes.eventsource + this._channelsPath() + '?' + this._query();
    var es = new root.EventSource(url);
    var opened = false;
    es.onopen = function () { opened = true; cb.opened(); };
    es.onmessage = function (e) { cb.data(e.data); };
    // A message published with an Event-Type header arrives as an event of that type, not as
    // 'message': list the types the app publishes in options.eventTypes.
    this.eventTypes.forEach(function (t) { es.addEventListener(t, function (e) { cb.data(e.data); }); });
    es.onerror = function () {
      // The browser would reconnect by itself with the same URL (and the backtrack again);
      // reconnect ourselves with the resume point instead.
      es.close();
      cb.ended(!opened, new Error('EventSource error'));
    };
    return function () { es.onopen = es.onmessage = es.onerror = null; es.close(); };
  };

  PushStreamClient.prototype._open_websocket = function (cb) {
    if (typeof root.WebSocket !== 'function') throw new Error('WebSocket is not supported');
    var url = (this.secure ? 'wss://' : 'ws://') + this.host + this.prefixes.websocket +
      this._channelsPath() + '?' + this._query();
    var ws = new root.WebSocket(url);
    var self = this;
    var opened = false;
    this._ws = ws;
    ws.onopen = function () { opened = true; cb.opened(); };
    ws.onmessage = function (e) { if (typeof e.data === 'string') cb.data(e.data); };
    ws.onclose = function (e) {
      if (self._ws === ws) self._ws = null;
      cb.ended(!opened, e.code === 1000 || e.code === 1005 ? null : new Error('WebSocket closed: ' + e.code + ' ' + (e.reason || '')));
    };
    ws.onerror = function () { /* onclose follows */ };
    return function () {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      if (self._ws === ws) self._ws = null;
      try { ws.close(); } catch (e) { /* ignore */ }
    };
  };

  PushStreamClient.prototype._open_longpolling = function (cb) {
    var self = this;
    var stopped = false;
    var controller = null;
    var opened = false;
    function poll() {
      if (stopped) return;
      var headers = {};
      var p = self._resumePoint();
      if (p) {
        headers['If-Modified-Since'] = p.timeText;
        headers['If-None-Match'] = 'W/' + p.tag;
      }
      var url = self._httpBase() + self.prefixes.longpolling + self._channelsPath() + '?_=' + Date.now();
      controller = typeof AbortController === 'function' ? new AbortController() : null;
      var timer = setTimeout(function () { if (controller) controller.abort(); }, self.longPollTimeout);
      fetch(url, { headers: headers, cache: 'no-store', signal: controller && controller.signal })
        .then(function (res) {
          if (res.status === 304) return '';
          if (res.status !== 200) throw new Error('long-polling: HTTP ' + res.status);
          return res.text();
        })
        .then(function (body) {
          clearTimeout(timer);
          if (stopped) return;
          if (!opened) { opened = true; cb.opened(); }
          if (body) cb.data(body);
          poll();   // at once: a 304 (timeout) or a message both mean "ask again"
        }, function (err) {
          clearTimeout(timer);
          if (stopped) return;
          if (err && err.name === 'AbortError' && opened) { poll(); return; }   // our own timeout
          stopped = true;
          cb.ended(!opened, err);
        });
    }
    poll();
    return function () { stopped = true; if (controller) controller.abort(); };
  };

  // One EventSource event, WebSocket frame or long-poll body: JSON objects, one per line.
  PushStreamClient.prototype._handleData = function (text) {
    var lines = String(text).split('\n');
    var pending = null;   // EventSource sends each line of a multi-line text as its own object
    for (var i = 0; i < lines.length; i++) {
      var line = lines[i].trim();
      if (!line || line.charAt(0) !== '{') continue;
      var m;
      try { m = JSON.parse(line); } catch (e) { continue; }
      if (pending && pending.id === Number(m.id) && pending.channel === String(m.channel) &&
          pending.time === String(m.time)) {
        pending.text += '\n' + m.text;
        continue;
      }
      if (pending) this._deliver(pending);
      pending = {
        id: Number(m.id),
        channel: String(m.channel == null ? '' : m.channel),
        text: m.text == null ? '' : String(m.text),
        tag: Number(m.tag) || 0,
        time: String(m.time || ''),
        eventid: m.eventid || ''
      };
    }
    if (pending) this._deliver(pending);
  };

  PushStreamClient.prototype._deliver = function (m) {
    if (m.id === -2) { try { this.onchanneldeleted(m.channel); } catch (e) { /* ignore */ } return; }
    if (!(m.id > 0)) return;   // -1 ping, -3 long-poll timeout
    var key = m.channel + '#' + m.id + '#' + m.time;
    if (this._seen[key]) return;
    this._seen[key] = true;
    this._seenOrder.push(key);
    if (this._seenOrder.length > 5000) delete this._seen[this._seenOrder.shift()];
    var t = Date.parse(m.time) || 0;
    var last = this._last[m.channel];
    if (!last || t > last.time || (t === last.time && m.tag > last.tag)) {
      this._last[m.channel] = { time: t, timeText: m.time, tag: m.tag };
    }
    m.transport = this.transport;
    try { this.onmessage(m); } catch (e) { if (root.console) root.console.error(e); }
  };

  if (typeof module === 'object' && module.exports) module.exports = PushStreamClient;
  else root.PushStreamClient = PushStreamClient;
})(typeof window !== 'undefined' ? window : this);
