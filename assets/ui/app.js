/* castari-gateway operator page.
 *
 * Structure, top to bottom:
 *   1. Helpers: DOM building (el, svgEl), tolerant readers for server JSON
 *      (obj, list, num, str) and formatters (times, bytes, ms, USD, %).
 *   2. State: the last snapshot, up to 900 history points (15 min), the last
 *      100 requests and the last 20 events.
 *   3. Renderers: one function per part of the page. Each reads `state` and
 *      updates the DOM in place (keyed rows and cards are reused, so focus
 *      stays put). renderAll() runs each one guarded: a bad field blanks one
 *      part, never the page.
 *   4. Charts: lineChart() draws a small SVG line chart with axis labels and
 *      a <title>/aria-label naming the latest value.
 *   5. Stream: one EventSource on /admin/events. `hello` replaces the state,
 *      `snapshot` appends, `queue`/`reload`/`breaker` go to the events log.
 *   6. Session and actions: /ui/session picks login or dashboard; login,
 *      logout; revoke/purge/reload go through the <dialog id="confirm">.
 *
 * Server strings are untrusted: they reach the DOM only as textContent or as
 * attribute values. No innerHTML, no inline styles, no storage APIs.
 */
'use strict';

(() => {
  // ---------------------------------------------------------------- 1. helpers
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const DASH = '—';
  const $ = (id) => document.getElementById(id);
  let uid = 0;

  function setAttrs(node, attrs) {
    if (!attrs) return;
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false || k === 'style') continue;
      if (k === 'text') node.textContent = String(v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
  }

  function append(node, kids) {
    for (const kid of kids) {
      if (kid === null || kid === undefined || kid === false) continue;
      node.append(typeof kid === 'object' ? kid : String(kid));
    }
  }

  function el(tag, attrs, ...kids) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    append(node, kids);
    return node;
  }

  function svgEl(tag, attrs, ...kids) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    append(node, kids);
    return node;
  }

  function setText(target, value) {
    const node = typeof target === 'string' ? $(target) : target;
    const text = String(value);
    if (node && node.textContent !== text) node.textContent = text;
  }

  function setTone(node, tone) {
    if (!node) return;
    node.classList.remove('ok', 'warn', 'bad', 'muted');
    if (tone) node.classList.add(tone);
  }

  function show(id, visible) {
    const node = $(id);
    if (node) node.hidden = !visible;
  }

  const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
  const obj = (v) => (isObj(v) ? v : {});
  const list = (v) => (Array.isArray(v) ? v : []);
  const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  const str = (v) =>
    typeof v === 'string' ? v : typeof v === 'number' && Number.isFinite(v) ? String(v) : '';

  function guard(fn, ...args) {
    try {
      return fn(...args);
    } catch (_) {
      return undefined; // a malformed field shows nothing rather than breaking the page
    }
  }

  // Formatters. All return display text; DASH when the value is missing.
  const round1 = (n) => (Math.abs(n) >= 100 ? String(Math.round(n)) : String(Math.round(n * 10) / 10));

  function fmtInt(v) {
    const n = num(v);
    return n === null ? DASH : Math.round(n).toLocaleString('en-US');
  }

  const fmtMs = (v) => (num(v) === null ? DASH : `${round1(v)} ms`);

  function fmtSeconds(ms) {
    const n = num(ms);
    if (n === null) return DASH;
    const s = Math.max(0, n) / 1000;
    if (s < 10) return `${s.toFixed(1)} s`;
    if (s < 120) return `${Math.round(s)} s`;
    if (s < 7200) return `${Math.round(s / 60)} min`;
    return `${Math.round(s / 3600)} h`;
  }

  function fmtSpan(ms) {
    const s = num(ms) === null ? null : ms / 1000;
    if (s === null) return DASH;
    if (s >= 3600 && s % 3600 === 0) return `${s / 3600} h`;
    if (s >= 120 && s % 60 === 0) return `${s / 60} min`;
    return `${round1(s)} s`;
  }

  function fmtIn(ms) {
    const n = num(ms);
    if (n === null) return DASH;
    return n <= 0 ? 'now' : `in ${fmtSeconds(n)}`;
  }

  function fmtAgo(sec) {
    const n = num(sec);
    if (n === null) return DASH;
    const s = Math.max(0, n);
    if (s < 5) return 'just now';
    if (s < 60) return `${Math.floor(s)} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 172800) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }

  const fmtPct = (r) => (num(r) === null ? DASH : `${round1(r * 100)} %`);

  function fmtBytes(v) {
    const b = num(v);
    if (b === null) return DASH;
    if (b < 1024) return `${Math.round(b)} B`;
    if (b < 1048576) return `${(b / 1024).toFixed(1)} KiB`;
    if (b < 1073741824) return `${(b / 1048576).toFixed(1)} MiB`;
    return `${(b / 1073741824).toFixed(2)} GiB`;
  }

  // USD amounts are exact decimal strings: shown as given, never parsed.
  const fmtUsd = (v) => (str(v) ? `$${str(v)}` : DASH);

  function validDate(ms) {
    const d = new Date(num(ms) === null ? NaN : ms);
    return Number.isNaN(d.getTime()) ? null : d;
  }

  function clock(ms) {
    const d = validDate(ms);
    return d ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' }) : DASH;
  }

  function timeEl(ms) {
    const d = validDate(ms);
    return d ? el('time', { datetime: d.toISOString(), text: clock(ms) }) : DASH;
  }

  // Age in seconds of a unix-seconds timestamp, against the server's clock.
  function ageSec(unixSec) {
    const at = num(unixSec);
    if (at === null) return null;
    const now = num(obj(state.snap).at);
    return (now === null ? Date.now() : now) / 1000 - at;
  }

  // Reuse one element per key: create new ones, update all, keep order, drop stale.
  function reconcile(parent, cache, items, keyOf, create, update) {
    const seen = new Set();
    let i = 0;
    for (const item of items) {
      const key = keyOf(item);
      if (seen.has(key)) continue;
      seen.add(key);
      let rec = cache.get(key);
      if (!rec) {
        rec = create(item, key);
        cache.set(key, rec);
      }
      guard(update, rec, item);
      const at = parent.children[i];
      if (at !== rec.el) parent.insertBefore(rec.el, at || null);
      i += 1;
    }
    for (const [key, rec] of cache) {
      if (!seen.has(key)) {
        rec.el.remove();
        cache.delete(key);
      }
    }
  }

  // ------------------------------------------------------------------ 2. state
  const MAX_POINTS = 900;
  const MAX_RECENT = 100;
  const MAX_EVENTS = 20;
  const state = { snap: null, points: [], stepMs: 1000, recent: [], events: [] };
  const laneRecs = new Map();
  const keyRecs = new Map();
  const recentRecs = new Map();

  const isPoint = (p) => isObj(p) && num(p.t) !== null;
  const isReq = (r) => isObj(r) && (num(r.seq) !== null || num(r.t) !== null);

  function normReq(r) {
    const seq = num(r.seq);
    return {
      key: seq === null ? `u${++uid}` : `s${seq}`,
      seq,
      t: num(r.t),
      client: str(r.client),
      method: str(r.method),
      route: str(r.route),
      status: num(r.status),
      cache: str(r.cache),
      waited: num(r.waited_ms),
      upstream: num(r.upstream_ms),
    };
  }

  function pushPoint(p) {
    const pts = state.points;
    const last = pts[pts.length - 1];
    if (last && p.t <= last.t) {
      if (p.t === last.t) pts[pts.length - 1] = p;
      return;
    }
    pts.push(p);
    if (pts.length > MAX_POINTS) pts.splice(0, pts.length - MAX_POINTS);
  }

  function addRecent(items) {
    let newest = null;
    for (const r of state.recent) if (r.seq !== null && (newest === null || r.seq > newest)) newest = r.seq;
    const fresh = items
      .filter(isReq)
      .map(normReq)
      .filter((r) => newest === null || r.seq === null || r.seq > newest);
    if (fresh.length) state.recent = fresh.concat(state.recent).slice(0, MAX_RECENT);
  }

  function logEvent(text, tone, at) {
    if (!text) return;
    state.events.unshift({ t: num(at) === null ? Date.now() : at, text, tone });
    if (state.events.length > MAX_EVENTS) state.events.length = MAX_EVENTS;
    guard(renderEvents);
  }

  function resetState() {
    state.snap = null;
    state.points = [];
    state.stepMs = 1000;
    state.recent = [];
    state.events = [];
    for (const m of [laneRecs, keyRecs, recentRecs]) m.clear();
    for (const id of ['lane-cards', 'keys-body', 'recent-body', 'queue-body', 'events']) $(id).replaceChildren();
    renderAll();
    guard(renderEvents);
  }

  // -------------------------------------------------------------- 3. renderers
  const RENDERERS = [renderHeader, renderConfig, renderUpstream, renderLanes, renderQueue, renderCache, renderKeys, renderRecent];

  function renderAll() {
    for (const fn of RENDERERS) guard(fn);
  }

  function renderHeader() {
    const s = obj(state.snap);
    show('waiting', !state.snap);
    show('meta', Boolean(state.snap));
    setText('version', num(s.version) === null ? DASH : String(s.version));
    const lr = isObj(s.last_reload) ? s.last_reload : null;
    const node = $('last-reload');
    if (!state.snap) setText(node, '');
    else if (!lr) setText(node, 'not reloaded since start');
    else setText(node, `${lr.applied === false ? 'reload failed' : 'reloaded'} ${fmtAgo(ageSec(lr.at))}`);
    setTone(node, lr && lr.applied === false ? 'warn' : 'muted');

    const parts = [];
    const cluster = isObj(s.cluster) ? s.cluster : null;
    if (str(s.replica)) parts.push(`replica ${str(s.replica)}`);
    if (cluster) {
      const n = list(cluster.replicas).length;
      parts.push(`${n} replica${n === 1 ? '' : 's'}`, `Redis ${str(cluster.redis) || DASH}`);
    }
    const rep = $('replica');
    rep.hidden = parts.length === 0;
    setText(rep, parts.join(' · '));
    setTone(rep, cluster && cluster.redis === 'lost' ? 'bad' : null);
  }

  function renderConfig() {
    const s = obj(state.snap);
    setText('cfg-mode', str(s.mode) || DASH);
    const lr = isObj(s.last_reload) ? s.last_reload : null;
    if (!lr) {
      setText('cfg-reload', state.snap ? 'none since start' : DASH);
    } else {
      const at = num(lr.at) === null ? null : lr.at * 1000;
      const v = num(lr.version) === null ? '' : `, version ${lr.version}`;
      const outcome = lr.applied === false ? 'not applied' : 'applied';
      setText('cfg-reload', `${clock(at)} (${fmtAgo(ageSec(lr.at))}), ${outcome}${v}`);
    }
    const err = lr ? str(lr.error) : '';
    show('cfg-error', Boolean(err));
    setText('cfg-error', err ? `Last reload error: ${err}` : '');

    const cluster = isObj(s.cluster) ? s.cluster : null;
    if (!cluster) {
      setText('cfg-cluster', state.snap ? 'single instance' : DASH);
    } else {
      const me = str(s.replica);
      const names = list(cluster.replicas).map(str).filter(Boolean).map((r) => (r === me ? `${r} (this one)` : r));
      setText('cfg-cluster', `Redis ${str(cluster.redis) || DASH}; replicas: ${names.join(', ') || DASH}`);
    }
    setTone($('cfg-cluster'), cluster && cluster.redis === 'lost' ? 'bad' : null);
  }

  function renderUpstream() {
    const u = obj(obj(state.snap).upstream);
    const breaker = str(u.breaker);
    const badge = $('up-breaker');
    setText(badge, breaker ? breaker.replace('_', '-') : DASH);
    setTone(badge, { closed: 'ok', half_open: 'warn', open: 'bad' }[breaker] || null);
    const ready = u.ready === true ? 'yes' : u.ready === false ? 'no' : DASH;
    setText('up-ready', ready);
    setTone($('up-ready'), u.ready === false ? 'bad' : null);

    const lat = obj(u.latency_ms);
    setText('up-p50', fmtMs(lat.p50));
    setText('up-p99', fmtMs(lat.p99));
    const rec = obj(u.recent);
    setText('up-errors', fmtInt(rec.errors));
    setText('up-throttled', fmtInt(rec.throttled));
    setTone($('up-errors'), num(rec.errors) > 0 ? 'warn' : null);
    setTone($('up-throttled'), num(rec.throttled) > 0 ? 'warn' : null);
    const note = [];
    if (num(rec.answers) !== null) note.push(`Counts over the last ${fmtInt(rec.answers)} upstream answers.`);
    if (num(lat.samples) === 0) note.push('No latency samples yet.');
    else if (num(lat.samples) !== null) note.push(`Latency from ${fmtInt(lat.samples)} samples.`);
    setText('up-note', note.join(' '));
  }

  // One item per lane, or one "off" item per credential without shaping.
  function laneItems() {
    const items = [];
    for (const c of list(obj(state.snap).credentials).filter(isObj)) {
      const name = str(c.name) || '?';
      const lanes = list(c.lanes).filter(isObj);
      if (c.shaping === false || lanes.length === 0) items.push({ kind: 'off', key: `${name}#off`, name });
      else for (const lane of lanes) items.push({ kind: 'lane', key: `${name}/${str(lane.lane)}`, name, lane });
    }
    return items;
  }

  // History per lane key ("credential/lane"): [{t, used, limit, depth}].
  function laneSeries() {
    const out = new Map();
    for (const p of state.points) {
      for (const l of list(p.lanes)) {
        if (!isObj(l)) continue;
        const key = `${str(l.credential)}/${str(l.lane)}`;
        if (!out.has(key)) out.set(key, []);
        out.get(key).push({ t: p.t, used: num(l.used), limit: num(l.limit), depth: num(l.depth) });
      }
    }
    return out;
  }

  function renderLanes() {
    const items = laneItems();
    show('lanes-empty', Boolean(state.snap) && items.length === 0);
    const series = laneSeries();
    reconcile($('lane-cards'), laneRecs, items, (it) => it.key, createLaneCard, (rec, it) => updateLaneCard(rec, it, series));
  }

  function createLaneCard(it) {
    const titleId = `lane-title-${++uid}`;
    if (it.kind === 'off') {
      const node = el('article', { class: 'lane lane-off', 'data-credential': it.name, 'aria-labelledby': titleId },
        el('h3', { id: titleId, text: it.name }),
        el('p', { class: 'muted', text: 'Rate shaping is off' }));
      return { el: node, kind: 'off' };
    }
    const rec = { kind: 'lane' };
    rec.used = el('span', { class: 'used' });
    rec.limit = el('span', { class: 'limit' });
    rec.per = el('span', { class: 'per' });
    rec.next = el('dd');
    rec.queue = el('dd');
    rec.remaining = el('dd');
    rec.maxWait = el('dd');
    rec.usedChart = chartSvg();
    rec.depthChart = chartSvg();
    rec.el = el('article', { class: 'lane', 'data-lane': it.key, 'aria-labelledby': titleId },
      el('h3', { id: titleId, text: `${it.name} · ${str(it.lane.lane) || '?'}` }),
      el('p', { class: 'big' }, rec.used, el('span', { class: 'sep', text: ' / ' }), rec.limit, ' ', rec.per),
      el('dl', { class: 'facts' },
        el('dt', { text: 'Next free slot' }), rec.next,
        el('dt', { text: 'Queue' }), rec.queue,
        el('dt', { text: 'Remaining' }), rec.remaining,
        el('dt', { text: 'Longest wait' }), rec.maxWait),
      el('figure', { class: 'chart' }, rec.usedChart, el('figcaption', { text: 'Budget used, last 15 min' })),
      el('figure', { class: 'chart' }, rec.depthChart, el('figcaption', { text: 'Queue depth, last 15 min' })));
    return rec;
  }

  function updateLaneCard(rec, it, series) {
    if (rec.kind !== 'lane') return;
    const l = it.lane;
    const used = num(l.used);
    const limit = num(l.limit);
    const depth = num(l.depth);
    setText(rec.used, used === null ? DASH : String(used));
    setText(rec.limit, limit === null ? DASH : String(limit));
    setText(rec.per, num(l.window_ms) === null ? '' : `per ${fmtSpan(l.window_ms)}`);
    setText(rec.next, fmtIn(l.next_free_ms));
    setText(rec.queue, `${fmtInt(depth)} / ${fmtInt(l.max_depth)} waiting`);
    setText(rec.remaining, fmtInt(l.remaining));
    setText(rec.maxWait, `up to ${fmtSeconds(l.max_wait_ms)}`);
    rec.el.classList.toggle('full', used !== null && limit !== null && used >= limit);

    const hist = series.get(it.key) || [];
    let top = limit || 1;
    for (const p of hist) top = Math.max(top, p.used || 0, p.limit || 0);
    lineChart(rec.usedChart, {
      data: hist.map((p) => ({ t: p.t, v: p.used })),
      yMax: top,
      fmtY: round1,
      cls: 'a',
      label: `Budget used on ${it.key}, ${spanText()}: latest ${used === null ? DASH : used} of ${limit === null ? DASH : limit}`,
    });
    let deepest = depth || 0;
    for (const p of hist) deepest = Math.max(deepest, p.depth || 0);
    lineChart(rec.depthChart, {
      data: hist.map((p) => ({ t: p.t, v: p.depth })),
      yMax: niceCeil(deepest),
      fmtY: round1,
      cls: 'b',
      label: `Queue depth on ${it.key}, ${spanText()}: latest ${depth === null ? DASH : depth} waiting`,
    });
  }

  function renderQueue() {
    const rows = [];
    const sessions = [];
    let total = 0;
    for (const c of list(obj(state.snap).credentials).filter(isObj)) {
      const name = str(c.name) || '?';
      sessions.push(`${name} ${fmtInt(c.sessions_active)}`);
      for (const l of list(c.lanes).filter(isObj)) {
        total += num(l.depth) || 0;
        for (const w of list(l.waiting).filter(isObj)) rows.push(queueRow(w, `${name}/${str(l.lane)}`));
      }
    }
    $('queue-body').replaceChildren(...rows);
    show('queue-wrap', rows.length > 0);
    show('queue-empty', rows.length === 0);
    show('queue-note', rows.length > 0 && total > rows.length);
    setText('queue-note', `Showing ${rows.length} of ${total} waiting.`);
    setText('sessions', `Sessions in flight: ${sessions.join(' · ') || DASH}`);
  }

  function queueRow(w, laneKey) {
    const client = str(w.client);
    const waited = num(w.waited_ms);
    return el('tr', { 'data-client': client },
      el('td', { class: 'num', text: fmtInt(w.position) }),
      el('td', { text: client || DASH }),
      el('td', { text: str(w.agent) || DASH }),
      el('td', { class: 'num', text: waited === null ? DASH : `${(waited / 1000).toFixed(1)} s` }),
      el('td', { text: laneKey }));
  }

  function renderCache() {
    const c = obj(state.snap).cache;
    const on = isObj(c);
    show('cache-off', Boolean(state.snap) && !on);
    show('cache-on', on);
    show('purge-form', on);
    if (!on) return;
    setText('cache-ratio', fmtPct(c.hit_ratio));
    setText('cache-counts', `${fmtInt(c.hits)} hits · ${fmtInt(c.misses)} misses · ${fmtInt(c.stale)} stale · ${fmtInt(c.coalesced)} coalesced`);
    setText('cache-saved', `${fmtInt(c.saved)} upstream reads`);
    setText('cache-bytes', `${fmtBytes(c.bytes)} of ${fmtBytes(c.max_bytes)}`);
    const used = num(c.bytes);
    const max = num(c.max_bytes);
    $('cache-meter').value = used !== null && max ? Math.min(1, Math.max(0, used / max)) : 0;
    setText('cache-entries', fmtInt(c.entries));
    const agents = list(c.agents_in_motion).map(str).filter(Boolean);
    $('cache-agents').replaceChildren(...(agents.length ? agents.map((a) => el('li', { text: a })) : [el('li', { class: 'muted', text: 'none' })]));
    lineChart($('cache-chart'), {
      data: state.points.map((p) => ({ t: p.t, v: num(p.hit_ratio) })),
      yMax: 1,
      fmtY: (v) => `${Math.round(v * 100)} %`,
      cls: 'a',
      label: `Cache hit ratio, ${spanText()}: latest ${fmtPct(c.hit_ratio)}`,
    });
  }

  function renderKeys() {
    const keys = obj(state.snap).keys;
    const on = Array.isArray(keys);
    show('keys-section', on);
    const items = on ? keys.filter((k) => isObj(k) && str(k.id)) : [];
    reconcile($('keys-body'), keyRecs, items, (k) => str(k.id), createKeyRow, updateKeyRow);
    show('keys-wrap', items.length > 0);
    show('keys-empty', on && items.length === 0);
  }

  function createKeyRow(k) {
    const rec = { data: k, shownRevoked: null };
    // The name cell is the row header, so each cell (and the Revoke button) is read with the key's name.
    rec.cells = [el('th', { scope: 'row' })].concat([1, 2, 3, 4, 5, 6, 7, 8].map(() => el('td')));
    const [, idCell, , req, inv, cost] = rec.cells;
    idCell.className = 'mono';
    for (const c of [req, inv, cost]) c.className = 'num';
    rec.meter = el('meter', { min: 0, max: 1, low: 0.75, high: 0.9, optimum: 0, value: 0 });
    rec.budgetText = el('span');
    rec.cells[6].append(rec.meter, ' ', rec.budgetText);
    rec.button = el('button', { type: 'button', class: 'revoke small-btn', text: 'Revoke…' });
    rec.button.addEventListener('click', () => revokeKey(rec.data, rec.button));
    rec.revokedBadge = el('span', { class: 'badge muted', text: 'revoked' });
    rec.el = el('tr', { 'data-key-id': str(k.id) }, ...rec.cells);
    return rec;
  }

  function updateKeyRow(rec, k) {
    rec.data = k;
    const [name, id, role, req, inv, cost, , runsOut, action] = rec.cells;
    const label = str(k.name) || str(k.id);
    setText(name, label);
    setText(id, str(k.id));
    setText(role, str(k.role) || DASH);
    const today = obj(k.today);
    setText(req, fmtInt(today.requests));
    setText(inv, fmtInt(today.invocations));
    setText(cost, fmtUsd(today.cost_usd));

    const b = isObj(k.budget) ? k.budget : null;
    const ratio = b ? num(b.used_ratio) : null;
    rec.meter.hidden = ratio === null;
    if (ratio !== null) {
      rec.meter.value = Math.min(1, Math.max(0, ratio));
      rec.meter.setAttribute('aria-label', `Budget used by ${label}: ${fmtPct(ratio)}`);
    }
    const period = b && str(b.period) ? ` per ${str(b.period)}` : '';
    setText(rec.budgetText, b ? `${fmtUsd(b.spent_usd)} of ${fmtUsd(b.limit_usd)}${period}${ratio === null ? '' : ` (${fmtPct(ratio)})`}` : 'no budget');
    setText(runsOut, (b && str(b.runs_out)) || DASH);

    const revoked = k.revoked === true;
    rec.el.classList.toggle('revoked', revoked);
    if (revoked !== rec.shownRevoked) {
      action.replaceChildren(revoked ? rec.revokedBadge : rec.button);
      rec.shownRevoked = revoked;
    }
  }

  function renderRecent() {
    reconcile($('recent-body'), recentRecs, state.recent, (r) => r.key, createRecentRow, () => {});
    show('recent-wrap', state.recent.length > 0);
    show('recent-empty', state.recent.length === 0);
  }

  function statusTone(status) {
    if (status === null) return '';
    if (status >= 500) return 'bad';
    if (status >= 400) return 'warn';
    return '';
  }

  function createRecentRow(r) {
    const row = el('tr', null,
      el('td', null, timeEl(r.t)),
      el('td', { text: r.client || DASH }),
      el('td', { text: r.method || DASH }),
      el('td', { class: 'mono', text: r.route || DASH }),
      el('td', { class: `num ${statusTone(r.status)}`.trim(), text: r.status === null ? DASH : String(r.status) }),
      el('td', { text: r.cache || DASH }),
      el('td', { class: 'num', text: fmtMs(r.waited) }),
      el('td', { class: 'num', text: fmtMs(r.upstream) }));
    return { el: row };
  }

  function renderEvents() {
    const items = state.events.map((ev) =>
      el('li', { class: ev.tone || null }, timeEl(ev.t), ' ', el('span', { text: ev.text })));
    $('events').replaceChildren(...items);
    show('events-empty', items.length === 0);
  }

  // ----------------------------------------------------------------- 4. charts
  const CH = { w: 320, h: 100, l: 34, r: 8, t: 8, b: 18 };

  const spanMs = () => MAX_POINTS * state.stepMs;
  const spanText = () => `last ${round1(spanMs() / 60000)} minutes`;

  function niceCeil(v) {
    if (!(v > 1)) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function chartSvg() {
    return svgEl('svg', { class: 'chart-svg', viewBox: `0 0 ${CH.w} ${CH.h}`, role: 'img', focusable: 'false' });
  }

  // o: {data: [{t, v}], yMax, fmtY, cls, label}. Nulls and gaps break the line.
  function lineChart(svg, o) {
    const pw = CH.w - CH.l - CH.r;
    const ph = CH.h - CH.t - CH.b;
    const span = spanMs();
    const last = state.points[state.points.length - 1];
    const tEnd = last ? last.t : num(obj(state.snap).at) || Date.now();
    const t0 = tEnd - span;
    const yMax = o.yMax > 0 ? o.yMax : 1;
    const x = (t) => (CH.l + ((t - t0) / span) * pw).toFixed(1);
    const y = (v) => (CH.t + ph - (Math.min(Math.max(v, 0), yMax) / yMax) * ph).toFixed(1);

    const kids = [svgEl('title', { text: o.label })];
    for (const v of [0, yMax / 2, yMax]) {
      kids.push(svgEl('line', { class: 'gridline', x1: CH.l, x2: CH.w - CH.r, y1: y(v), y2: y(v) }));
    }
    for (const v of [0, yMax]) {
      kids.push(svgEl('text', { class: 'axis', x: CH.l - 4, y: Number(y(v)) + 3, 'text-anchor': 'end', text: o.fmtY(v) }));
    }
    const minutes = span / 60000;
    const ticks = [[0, `−${round1(minutes)} min`, 'start'], [1 / 3, `−${round1((minutes * 2) / 3)}`, 'middle'],
      [2 / 3, `−${round1(minutes / 3)}`, 'middle'], [1, 'now', 'end']];
    for (const [f, text, anchor] of ticks) {
      kids.push(svgEl('text', { class: 'axis', x: (CH.l + f * pw).toFixed(1), y: CH.h - 4, 'text-anchor': anchor, text }));
    }

    let d = '';
    let prevT = null;
    let lastPt = null;
    const gap = 3 * state.stepMs;
    for (const p of o.data) {
      if (num(p.t) === null || p.t < t0 || num(p.v) === null) {
        prevT = null;
        continue;
      }
      d += `${prevT === null || p.t - prevT > gap ? 'M' : 'L'}${x(p.t)} ${y(p.v)}`;
      prevT = p.t;
      lastPt = p;
    }
    if (d) kids.push(svgEl('path', { class: `line ${o.cls}`, d }));
    if (lastPt) kids.push(svgEl('circle', { class: `dot ${o.cls}`, cx: x(lastPt.t), cy: y(lastPt.v), r: 2.5 }));
    else kids.push(svgEl('text', { class: 'nodata', x: CH.l + pw / 2, y: CH.t + ph / 2, 'text-anchor': 'middle', text: 'no data yet' }));

    svg.replaceChildren(...kids);
    svg.setAttribute('aria-label', o.label);
  }

  // ----------------------------------------------------------------- 5. stream
  let es = null;
  let retryMs = 2000;
  let retryTimer = 0;

  function setConn(text, tone) {
    const node = $('conn');
    setText(node, text);
    node.className = `conn conn-${tone}`;
  }

  function onStreamEvent(handler) {
    return (ev) => {
      let data;
      try {
        data = JSON.parse(ev.data);
      } catch (_) {
        return;
      }
      if (isObj(data)) guard(handler, data);
    };
  }

  function onHello(d) {
    const h = obj(d.history);
    state.stepMs = num(h.step_ms) > 0 ? h.step_ms : 1000;
    state.points = list(h.points).filter(isPoint).slice(-MAX_POINTS);
    state.recent = [];
    recentRecs.clear();
    $('recent-body').replaceChildren();
    state.snap = isObj(d.snapshot) ? d.snapshot : null;
    if (state.snap) {
      if (isPoint(state.snap.point)) pushPoint(state.snap.point);
      addRecent(list(state.snap.recent));
    }
    renderAll();
  }

  function onSnapshot(s) {
    state.snap = s;
    if (isPoint(s.point)) pushPoint(s.point);
    addRecent(list(s.recent));
    renderAll();
  }

  function onQueue(d) {
    const who = str(d.client) || 'a client';
    const subject = str(d.agent) ? `${who} (agent ${str(d.agent)})` : who;
    const where = `${str(d.credential) || '?'}/${str(d.lane) || '?'}`;
    if (d.kind === 'join') logEvent(`${subject} joined the ${where} queue`, null);
    else if (d.kind === 'leave') logEvent(`${subject} left the ${where} queue after ${fmtSeconds(d.waited_ms)}`, null);
  }

  function onReloadEvent(d) {
    const at = num(d.at) === null ? null : d.at * 1000;
    const v = num(d.version) === null ? '' : ` (version ${d.version})`;
    if (d.applied === false) logEvent(`Reload not applied${v}: ${str(d.error) || 'unknown error'}`, 'warn', at);
    else logEvent(`Configuration reloaded${v}`, 'ok', at);
  }

  function onBreaker(d) {
    const to = str(d.to);
    const tone = { open: 'bad', half_open: 'warn', closed: 'ok' }[to] || null;
    logEvent(`Upstream breaker ${str(d.from).replace('_', '-') || '?'} → ${to.replace('_', '-') || '?'}`, tone);
  }

  function connect() {
    closeStream();
    const src = new EventSource('/admin/events');
    es = src;
    setConn('connecting…', 'pending');
    src.onopen = () => {
      if (es !== src) return;
      retryMs = 2000;
      setConn('live', 'live');
    };
    src.onerror = () => {
      if (es !== src) return;
      if (src.readyState === EventSource.CLOSED) onStreamClosed();
      else setConn('reconnecting…', 'pending');
    };
    src.addEventListener('hello', onStreamEvent(onHello));
    src.addEventListener('snapshot', onStreamEvent(onSnapshot));
    src.addEventListener('queue', onStreamEvent(onQueue));
    src.addEventListener('reload', onStreamEvent(onReloadEvent));
    src.addEventListener('breaker', onStreamEvent(onBreaker));
  }

  function closeStream() {
    clearTimeout(retryTimer);
    retryTimer = 0;
    if (es) {
      es.close();
      es = null;
    }
  }

  // The browser gave up (e.g. 401 before the stream): ask the session why.
  async function onStreamClosed() {
    closeStream();
    setConn('reconnecting…', 'pending');
    const s = await fetchSession();
    if (s && needsLogin(s)) {
      applySession(s);
      return;
    }
    if (s) updateLogout(s);
    // Not an auth failure: one delayed reconnect, backing off, never a poll.
    retryTimer = setTimeout(() => {
      retryTimer = 0;
      connect();
    }, retryMs);
    retryMs = Math.min(retryMs * 2, 30000);
  }

  // ------------------------------------------------------- 6. session, actions
  const needsLogin = (s) => s.login_required === true && s.authenticated !== true;

  async function fetchSession() {
    try {
      const r = await fetch('/ui/session', { headers: { Accept: 'application/json' }, cache: 'no-store', credentials: 'same-origin' });
      if (!r.ok) return null;
      const s = await r.json();
      return isObj(s) ? s : null;
    } catch (_) {
      return null;
    }
  }

  async function postJSON(url, body) {
    try {
      const r = await fetch(url, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify(body),
        credentials: 'same-origin',
        cache: 'no-store',
      });
      const text = await r.text();
      let data = null;
      try {
        data = text ? JSON.parse(text) : null;
      } catch (_) {
        data = null;
      }
      return { ok: r.ok, status: r.status, data };
    } catch (_) {
      return { ok: false, status: 0, data: null };
    }
  }

  function errorText(res, fallback) {
    const detail = str(obj(res.data).detail);
    if (detail) return detail;
    if (res.status === 0) return 'The gateway could not be reached.';
    return `${fallback} (HTTP ${res.status})`;
  }

  async function boot() {
    show('boot-error', false);
    const s = await fetchSession();
    if (s) applySession(s);
    else showBootError();
  }

  function showBootError() {
    show('boot-error', true);
    setConn('offline', 'off');
  }

  function applySession(s) {
    if (needsLogin(s)) enterLogin(s);
    else enterDashboard(s);
  }

  function updateLogout(s) {
    $('logout').hidden = !(s.authenticated === true && (s.login_required === true || s.mode === 'keys'));
  }

  function enterLogin(s) {
    closeStream();
    resetState();
    show('dashboard', false);
    show('logout', false);
    show('login', true);
    const canLogin = s.can_login !== false;
    show('login-nokey', !canLogin);
    $('login-key').disabled = !canLogin;
    $('login-submit').disabled = !canLogin;
    setConn('signed out', 'off');
    if (canLogin) $('login-key').focus();
  }

  function enterDashboard(s) {
    show('login', false);
    show('dashboard', true);
    updateLogout(s);
    if (!es && !retryTimer) connect();
  }

  async function onLoginSubmit(ev) {
    ev.preventDefault();
    const input = $('login-key');
    const button = $('login-submit');
    const error = $('login-error');
    const key = input.value;
    input.value = ''; // the key never stays in the DOM
    if (!key) {
      setText(error, 'Enter the admin key.');
      input.focus();
      return;
    }
    setText(error, '');
    button.disabled = true;
    const res = await postJSON('/ui/login', { key });
    button.disabled = false;
    if (!res.ok) {
      setText(error, errorText(res, 'Login failed.'));
      input.focus();
      return;
    }
    const s = await fetchSession();
    if (!s) {
      showBootError();
    } else if (needsLogin(s)) {
      applySession(s);
      setText(error, 'Logged in, but the session cookie was not kept. Allow cookies for this site.');
    } else {
      applySession(s);
      $('main').focus();
    }
  }

  async function onLogout() {
    const button = $('logout');
    button.disabled = true;
    closeStream();
    const res = await postJSON('/ui/logout', {});
    button.disabled = false;
    setResult(res.ok ? '' : errorText(res, 'Logout failed.'), res.ok ? '' : 'err');
    const s = await fetchSession();
    if (s) applySession(s);
    else showBootError();
  }

  // Confirm step: resolves true only when #confirm-ok closed the dialog.
  let confirmResolve = null;

  function confirmStep(message, okLabel) {
    const dlg = $('confirm');
    if (typeof dlg.showModal !== 'function') return Promise.resolve(window.confirm(message));
    if (dlg.open) return Promise.resolve(false);
    setText('confirm-msg', message);
    setText('confirm-ok', okLabel || 'Confirm');
    dlg.returnValue = '';
    return new Promise((resolve) => {
      confirmResolve = resolve;
      dlg.showModal();
    });
  }

  function onConfirmClose() {
    const resolve = confirmResolve;
    confirmResolve = null;
    if (resolve) resolve($('confirm').returnValue === 'ok');
  }

  function setResult(text, tone) {
    setText('action-result', text);
    const toast = $('toast');
    toast.className = `toast${text ? '' : ' idle'}${tone ? ` ${tone}` : ''}`;
    $('toast-close').hidden = !text;
  }

  let actionBusy = false;

  // a: {button, message, ok, url, body, done(data) -> string | {text, tone}}
  async function runAction(a) {
    if (actionBusy) return;
    actionBusy = true;
    try {
      if (!(await confirmStep(a.message, a.ok))) return;
      if (a.button) a.button.disabled = true;
      setResult('Working…', 'busy');
      const res = await postJSON(a.url, a.body);
      if (res.ok) {
        const out = guard(a.done, obj(res.data)) || 'Done.';
        if (typeof out === 'string') setResult(out, 'ok');
        else setResult(out.text, out.tone);
      } else {
        setResult(errorText(res, 'The action failed.'), 'err');
        if (res.status === 401) {
          const s = await fetchSession();
          if (s) applySession(s);
        }
      }
    } finally {
      if (a.button) a.button.disabled = false;
      actionBusy = false;
    }
  }

  function revokeKey(k, button) {
    const id = str(k.id);
    const name = str(k.name) || id;
    runAction({
      button,
      message: `Revoke key ${name} (${id})? Tools using it are refused at once.`,
      ok: 'Revoke key',
      url: '/ui/actions/revoke',
      body: { id },
      done: () => {
        markRevoked(id);
        return `Revoked key ${name} (${id}). Tools using it are now refused.`;
      },
    });
  }

  function markRevoked(id) {
    const keys = list(obj(state.snap).keys);
    const i = keys.findIndex((k) => isObj(k) && k.id === id);
    if (i >= 0) keys[i] = { ...keys[i], revoked: true };
    guard(renderKeys);
  }

  function onPurgeSubmit(ev) {
    ev.preventDefault();
    const prefix = $('purge-prefix').value.trim();
    runAction({
      button: $('purge'),
      message: prefix
        ? `Purge every cached answer whose path starts with ${prefix}? The next reads of them go to the upstream.`
        : 'Purge the whole cache? Every next read goes to the upstream.',
      ok: 'Purge',
      url: '/ui/actions/purge',
      body: { prefix },
      done: (d) => {
        const n = num(d.purged);
        const p = typeof d.prefix === 'string' ? d.prefix : prefix;
        const count = n === null ? 'the' : `${fmtInt(n)}`;
        return `Purged ${count} cached answer${n === 1 ? '' : 's'} ${p ? `under ${p}` : 'from the whole cache'}.`;
      },
    });
  }

  function onReload() {
    runAction({
      button: $('reload'),
      message: 'Reload the configuration file now? A valid file takes effect at once for new requests; an invalid one is refused and the running configuration stays.',
      ok: 'Reload',
      url: '/ui/actions/reload',
      body: {},
      done: (d) => {
        const v = num(d.version) === null ? '' : `: version ${d.version}`;
        if (d.applied === false) return { text: `Reload not applied${v}. ${str(d.error) || ''}`.trim(), tone: 'err' };
        const pending = list(d.pending_restart).map(str).filter(Boolean);
        return `Configuration reloaded${v}.${pending.length ? ` A restart is needed for: ${pending.join(', ')}.` : ''}`;
      },
    });
  }

  function init() {
    $('login-form').addEventListener('submit', onLoginSubmit);
    $('logout').addEventListener('click', onLogout);
    $('purge-form').addEventListener('submit', onPurgeSubmit);
    $('reload').addEventListener('click', onReload);
    $('confirm-ok').addEventListener('click', () => $('confirm').close('ok'));
    $('confirm-cancel').addEventListener('click', () => $('confirm').close('cancel'));
    $('confirm').addEventListener('close', onConfirmClose);
    $('toast-close').addEventListener('click', () => setResult('', ''));
    $('boot-retry').addEventListener('click', boot);
    setResult('', '');
    boot();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
