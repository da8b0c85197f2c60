// The Stagehost console: polls the admin API with the bearer token, draws
// the pipeline graph as SVG and keeps the tables up to date. Rates are the
// difference of two /metrics samples over the time between them.
'use strict';

(() => {
  const TOKEN_KEY = 'stagehost-admin-token';
  const SVG = 'http://www.w3.org/2000/svg';
  const RATE_WINDOW_MS = 3000;

  const state = {
    token: '',
    graph: null,
    graphKey: '',
    samples: [],
    rates: null,
    handlers: [],
    countSamples: new Map(),
    topics: null,
    topicsError: '',
    deadLetters: [],
    paused: new Set(),
  };

  // ---- the token: from the fragment (never sent), else the session ----
  function takeToken() {
    const match = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (match) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
      history.replaceState(null, '', location.pathname + location.search);
    }
    state.token = sessionStorage.getItem(TOKEN_KEY) || '';
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path) {
    const headers = {};
    if (state.token) headers.Authorization = 'Bearer ' + state.token;
    const response = await fetch(path, { method, headers, cache: 'no-store' });
    const text = await response.text();
    let body = text;
    if ((response.headers.get('content-type') || '').includes('json')) {
      try { body = JSON.parse(text); } catch (_) { /* keep the text */ }
    }
    if (!response.ok) {
      const reason = body && body.error ? body.error : (text || response.statusText);
      if (response.status === 401) askForToken(reason);
      throw new ApiError(response.status, `${method} ${path}: ${response.status} ${reason}`);
    }
    return body;
  }

  function askForToken(reason) {
    document.getElementById('login').hidden = false;
    document.getElementById('login-error').textContent = state.token ? reason : '';
    setStatus('the admin API needs the bearer token', true);
  }

  // ---- small DOM helpers (text only: names and reasons are never HTML) ----
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    setAttrs(node, attrs);
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      node.setAttribute(key, value === true ? '' : String(value));
    }
  }

  function setText(node, text) {
    const value = String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  function setStatus(text, bad) {
    const status = document.getElementById('status');
    setText(status, text);
    status.classList.toggle('bad', !!bad);
  }

  function say(text, isError) {
    const message = document.getElementById('message');
    message.hidden = false;
    message.classList.toggle('error', !!isError);
    setText(message, text);
  }

  function short(version) {
    return version ? String(version).slice(0, 12) : '—';
  }

  function clip(text, max) {
    text = String(text);
    if (text.length <= max) return text;
    const head = Math.ceil((max - 1) * 0.6);
    return text.slice(0, head) + '…' + text.slice(text.length - (max - 1 - head));
  }

  function rate(value) {
    if (value === undefined || value === null || Number.isNaN(value)) return '—';
    if (value >= 100) return value.toFixed(0);
    if (value >= 10) return value.toFixed(1);
    return value.toFixed(2);
  }

  // Rows keyed by `key`, kept from one refresh to the next so that a button
  // someone is about to click is never replaced under them.
  function syncRows(tbody, specs) {
    const existing = new Map();
    for (const row of tbody.rows) existing.set(row.dataset.key, row);
    const wanted = new Set();
    for (const spec of specs) {
      wanted.add(spec.key);
      let row = existing.get(spec.key);
      if (!row) {
        row = spec.make();
        row.dataset.key = spec.key;
      }
      spec.update(row);
      tbody.append(row);
    }
    for (const [key, row] of existing) {
      if (!wanted.has(key)) row.remove();
    }
  }

  function cell(cls, attrs) {
    return el('td', Object.assign({ class: cls }, attrs || {}));
  }

  function button(action, label, data, title) {
    const attrs = { type: 'button', class: action, 'data-action': action, title };
    for (const [key, value] of Object.entries(data)) attrs['data-' + key] = value;
    return el('button', attrs, label);
  }

  // ---- Prometheus text ----
  function parseMetrics(text) {
    const series = [];
    const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
    const label = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
    for (const row of text.split('\n')) {
      if (!row || row.startsWith('#')) continue;
      const match = line.exec(row);
      if (!match) continue;
      const labels = {};
      for (const found of (match[2] || '').matchAll(label)) {
        labels[found[1]] = found[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
      }
      series.push({ name: match[1], labels, value: Number(match[3]) });
    }
    return series;
  }

  // The counters the page shows rates of, summed to what it shows.
  function totals(series) {
    const counts = new Map();
    const lag = new Map();
    const add = (key, value) => counts.set(key, (counts.get(key) || 0) + value);
    for (const { name, labels, value } of series) {
      switch (name) {
        case 'stagehost_messages_in_total':
          add(`in|${labels.stage}`, value);
          break;
        case 'stagehost_messages_out_total':
          add(`out|${labels.stage}`, value);
          break;
        case 'stagehost_dead_letters_total':
          add(`dlq|${labels.stage}`, value);
          break;
        case 'stagehost_handler_duration_seconds_count':
          add(`calls|${labels.handler}`, value);
          break;
        case 'stagehost_handler_errors_total':
          if (labels.kind !== 'transient') add(`failed|${labels.handler}`, value);
          break;
        case 'stagehost_consumer_lag':
          if (!lag.has(labels.stage)) lag.set(labels.stage, []);
          lag.get(labels.stage).push({ partition: Number(labels.partition), lag: value });
          break;
        default:
      }
    }
    return { counts, lag };
  }

  // Per second, between the oldest sample of the window and the newest.
  function ratesOf(samples) {
    const last = samples[samples.length - 1];
    const first = samples.find((s) => last.at - s.at <= RATE_WINDOW_MS) || samples[0];
    const seconds = (last.at - first.at) / 1000;
    const rates = new Map();
    if (seconds <= 0) return rates;
    for (const [key, value] of last.counts) {
      const before = first.counts.get(key) || 0;
      rates.set(key, Math.max(0, value - before) / seconds);
    }
    return rates;
  }

  // A rate from a running count the page samples itself (canary counts).
  function countRate(key, value) {
    const now = performance.now();
    const seen = state.countSamples.get(key) || [];
    seen.push({ at: now, value });
    while (seen.length > 2 && now - seen[1].at >= RATE_WINDOW_MS) seen.shift();
    state.countSamples.set(key, seen);
    const first = seen[0];
    const seconds = (now - first.at) / 1000;
    return seconds > 0 ? Math.max(0, value - first.value) / seconds : undefined;
  }

  // ---- the graph: a layered layout, left to right ----
  const STAGE_W = 200, STAGE_H = 70, TOPIC_W = 190, TOPIC_H = 30;
  const COLUMN = 290, ROW = 96, MARGIN = 20;

  function layout(graph) {
    const nodes = new Map();
    for (const topic of graph.topics) nodes.set(topic.id, { kind: 'topic', data: topic, layer: 0, into: [], out: [] });
    for (const stage of graph.stages) nodes.set(stage.id, { kind: 'stage', data: stage, layer: 0, into: [], out: [] });
    const edges = graph.edges.filter((e) => nodes.has(e.from) && nodes.has(e.to));
    for (const edge of edges) {
      nodes.get(edge.from).out.push(edge);
      nodes.get(edge.to).into.push(edge);
    }
    // Longest path from the sources; a bounded number of passes, so that a
    // cycle (which the config checks refuse) cannot hang the page.
    for (let pass = 0; pass < nodes.size; pass++) {
      let changed = false;
      for (const edge of edges) {
        const from = nodes.get(edge.from), to = nodes.get(edge.to);
        if (to.layer < from.layer + 1) {
          to.layer = from.layer + 1;
          changed = true;
        }
      }
      if (!changed) break;
    }
    const layers = [];
    for (const [id, node] of nodes) {
      (layers[node.layer] = layers[node.layer] || []).push(id);
    }
    // Order each layer by where its predecessors sit (one barycentre pass).
    const position = new Map();
    layers.forEach((ids, layer) => {
      if (layer > 0) {
        const centre = (id) => {
          const from = nodes.get(id).into.map((e) => position.get(e.from)).filter((p) => p !== undefined);
          return from.length ? from.reduce((a, b) => a + b, 0) / from.length : 1e9;
        };
        // Dead-letter topics below the others.
        const last = (id) => (nodes.get(id).data.kind === 'dead-letters' ? 1 : 0);
        ids.sort((a, b) => last(a) - last(b) || centre(a) - centre(b));
      }
      ids.forEach((id, index) => position.set(id, index));
    });
    const tallest = Math.max(1, ...layers.map((ids) => (ids ? ids.length : 0)));
    const height = tallest * ROW + MARGIN;
    layers.forEach((ids, layer) => {
      const top = (height - ids.length * ROW) / 2;
      ids.forEach((id, index) => {
        const node = nodes.get(id);
        node.w = node.kind === 'stage' ? STAGE_W : TOPIC_W;
        node.h = node.kind === 'stage' ? STAGE_H : TOPIC_H;
        node.x = MARGIN + layer * COLUMN + (COLUMN - 90 - node.w) / 2;
        node.y = top + index * ROW + (ROW - node.h) / 2;
      });
    });
    return { nodes, edges, width: MARGIN * 2 + layers.length * COLUMN - 90, height };
  }

  function drawGraph(graph) {
    const { nodes, edges, width, height } = layout(graph);
    const root = svg('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'pipeline graph' });
    root.append(svg('defs', {}, svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
      svg('path', { d: 'M0,0 L10,5 L0,10 z' }))));
    const labels = svg('g', { class: 'labels' });
    edges.forEach((edge, index) => {
      const from = nodes.get(edge.from), to = nodes.get(edge.to);
      const x1 = from.x + from.w, y1 = from.y + from.h / 2;
      const x2 = to.x, y2 = to.y + to.h / 2;
      const bend = Math.max(30, (x2 - x1) / 2);
      const link = edge.link;
      root.append(svg('path', {
        class: `edge ${link}`,
        d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`,
        'marker-end': 'url(#arrow)',
      }));
      const stage = (link === 'input' ? to : from).data.name;
      labels.append(svg('text', {
        class: `edge-rate ${link}`,
        'data-edge': index,
        'data-stage': stage,
        'data-link': link,
        x: (x1 + x2) / 2,
        y: (y1 + y2) / 2 - 4,
        'text-anchor': 'middle',
      }, '—'));
    });
    for (const [id, node] of nodes) {
      const data = node.data;
      if (node.kind === 'topic') {
        root.append(svg('g', { class: `topic ${data.kind}`, 'data-topic': data.name, 'data-id': id },
          svg('title', {}, `topic ${data.name} (${data.kind})`),
          svg('rect', { x: node.x, y: node.y, width: node.w, height: node.h, rx: 14 }),
          svg('text', { x: node.x + node.w / 2, y: node.y + 19, 'text-anchor': 'middle' }, clip(data.name, 26))));
      } else {
        const cls = ['stage', data.running ? '' : 'elsewhere', data.paused ? 'paused' : ''].join(' ').trim();
        const cx = node.x + node.w / 2;
        root.append(svg('g', { class: cls, 'data-stage': data.name, 'data-id': id },
          svg('title', {}, `stage ${data.name}: ${data.routes}`),
          svg('rect', { x: node.x, y: node.y, width: node.w, height: node.h, rx: 6 }),
          svg('text', { class: 'name', x: cx, y: node.y + 17, 'text-anchor': 'middle' }, clip(data.name, 26) + (data.paused ? ' (paused)' : '')),
          svg('text', { class: 'routes', x: cx, y: node.y + 32, 'text-anchor': 'middle' }, clip(data.routes, 32)),
          svg('text', { class: 'stage-rate', 'data-stage': data.name, x: cx, y: node.y + 48, 'text-anchor': 'middle' }, '— msg/s'),
          svg('text', { class: 'lag', 'data-stage': data.name, x: cx, y: node.y + 62, 'text-anchor': 'middle' }, data.running ? 'lag —' : 'not run by this host')));
      }
    }
    root.append(labels);
    const box = document.getElementById('graph');
    box.replaceChildren(root);
  }

  // ---- refreshing what is shown ----
  function stageRate(kind, stage) {
    return state.rates ? state.rates.get(`${kind}|${stage}`) : undefined;
  }

  function lagOf(stage) {
    if (state.topics) {
      return state.topics.filter((t) => t.stage === stage).map((t) => ({ partition: t.partition, lag: t.lag }));
    }
    const sample = state.samples[state.samples.length - 1];
    return sample ? sample.lag.get(stage) || [] : [];
  }

  function lagText(parts) {
    if (!parts.length) return '—';
    return parts.slice().sort((a, b) => a.partition - b.partition).map((p) => `p${p.partition}: ${p.lag}`).join('  ');
  }

  function updateGraphRates() {
    for (const label of document.querySelectorAll('#graph .edge-rate')) {
      const stage = label.dataset.stage;
      const link = label.dataset.link;
      const running = state.graph && state.graph.stages.some((s) => s.name === stage && s.running);
      let text = '—';
      if (running) {
        if (link === 'input') text = `${rate(stageRate('in', stage))} msg/s`;
        else if (link === 'dead-letter') text = `${rate(stageRate('dlq', stage))} dead/s`;
        else if (link === 'output') text = `${rate(stageRate('out', stage))} out/s`;
        else text = 'branch (in out/s)';
      }
      setText(label, text);
    }
    for (const text of document.querySelectorAll('#graph .stage-rate')) {
      const stage = text.dataset.stage;
      const running = state.graph.stages.some((s) => s.name === stage && s.running);
      setText(text, running ? `${rate(stageRate('in', stage))} msg/s` : '');
    }
    for (const text of document.querySelectorAll('#graph .lag')) {
      const stage = text.dataset.stage;
      const running = state.graph.stages.some((s) => s.name === stage && s.running);
      if (!running) continue;
      const parts = lagOf(stage);
      const total = parts.reduce((sum, p) => sum + p.lag, 0);
      setText(text, parts.length ? `lag ${total} (${parts.length} partition${parts.length === 1 ? '' : 's'})` : 'lag —');
    }
  }

  function renderStages() {
    if (!state.graph) return;
    const config = state.graph.config;
    const specs = state.graph.stages.map((stage) => ({
      key: stage.name,
      make: () => el('tr', { class: 'stage', 'data-stage': stage.name },
        cell('name'), cell('mono input'), cell('num in-rate'), cell('num out-rate'), cell('num dlq-rate'),
        cell('mono lag'), cell('state'),
        cell('actions', {},),
      ),
      update: (row) => {
        const [name, input, inRate, outRate, dlqRate, lag, status, actions] = row.cells;
        setText(name, stage.name);
        setText(input, stage.input);
        input.title = stage.input;
        setText(inRate, stage.running ? rate(stageRate('in', stage.name)) : '—');
        setText(outRate, stage.running ? rate(stageRate('out', stage.name)) : '—');
        setText(dlqRate, stage.running ? rate(stageRate('dlq', stage.name)) : '—');
        setText(lag, stage.running ? lagText(lagOf(stage.name)) : '—');
        const label = !stage.running ? 'not here' : stage.paused ? 'paused' : 'running';
        if (status.dataset.label !== label) {
          status.dataset.label = label;
          status.replaceChildren(el('span', { class: `badge ${label.replace(' ', '-')}` }, label));
        }
        const wanted = stage.running ? (stage.paused ? 'resume' : 'pause') : 'none';
        if (actions.dataset.wanted !== wanted) {
          actions.dataset.wanted = wanted;
          const buttons = [];
          if (stage.running) {
            buttons.push(button(wanted, wanted === 'pause' ? 'Pause' : 'Resume', { stage: stage.name },
              wanted === 'pause' ? 'stop fetching; nothing is lost' : 'fetch again'));
          }
          buttons.push(button('redrive', 'Redrive…', { stage: stage.name, config }, 'send the dead letters back through the stage'));
          actions.replaceChildren(...buttons);
        }
      },
    }));
    syncRows(document.querySelector('#stages tbody'), specs);
  }

  function handlerRows(info) {
    const rows = [];
    const canary = info.canary;
    const shadow = info.shadow;
    const calls = state.rates ? state.rates.get(`calls|${info.name}`) : undefined;
    const failed = state.rates ? state.rates.get(`failed|${info.name}`) : undefined;
    const stable = {
      role: 'stable', version: info.version,
      rate: calls,
      dead: failed !== undefined ? failed : calls !== undefined ? 0 : undefined,
      details: [
        info.pinned ? `pinned ${short(info.pinned)}` : '',
        info.previous_version ? `previous ${short(info.previous_version)}` : 'no previous version',
        `loaded ${info.loaded_at}`,
      ].filter(Boolean).join(' · '),
    };
    if (canary) {
      stable.rate = countRate(`${info.name}|stable|m`, canary.stable_messages || 0);
      stable.dead = countRate(`${info.name}|stable|d`, canary.stable_dead_letters || 0);
    }
    rows.push(stable);
    if (canary) {
      const percent = canary.percent !== undefined ? `${canary.percent}% of keys` : '';
      rows.push({
        role: 'canary', version: canary.version,
        rate: countRate(`${info.name}|canary|m`, canary.messages || 0),
        dead: countRate(`${info.name}|canary|d`, canary.dead_letters || 0),
        details: [percent,
          `${canary.messages || 0} messages, ${canary.dead_letters || 0} dead`,
          `stable ${canary.stable_messages || 0} / ${canary.stable_dead_letters || 0}`,
          canary.started_at ? `since ${canary.started_at}` : ''].filter(Boolean).join(' · '),
      });
    }
    if (shadow) {
      const compared = (shadow.agreements || 0) + (shadow.differences || 0);
      rows.push({
        role: 'shadow', version: shadow.version,
        rate: countRate(`${info.name}|shadow|m`, compared),
        dead: undefined,
        details: `${shadow.differences || 0} differences, ${shadow.agreements || 0} agreements` +
          ` (${rate(countRate(`${info.name}|shadow|d`, shadow.differences || 0))} differences/s)` +
          (shadow.started_at ? ` · since ${shadow.started_at}` : ''),
      });
    }
    if (!canary && info.last_canary && info.last_canary.outcome) {
      stable.details += ` · last canary ${short(info.last_canary.version)}: ${info.last_canary.outcome}`;
    }
    return rows;
  }

  function renderHandlers() {
    const specs = [];
    for (const info of state.handlers) {
      for (const row of handlerRows(info)) {
        specs.push({
          key: `${info.name}|${row.role}`,
          make: () => el('tr', { class: 'handler', 'data-handler': info.name, 'data-role': row.role },
            cell('name'), cell('role'), cell('mono version'), cell('num rate'), cell('num dead-rate'),
            cell('details small'), cell('actions')),
          update: (tr) => {
            const [name, role, version, rateCell, dead, details, actions] = tr.cells;
            setText(name, row.role === 'stable' ? info.name : '');
            setText(role, row.role);
            setText(version, short(row.version));
            version.title = row.version || '';
            setText(rateCell, rate(row.rate));
            setText(dead, rate(row.dead));
            setText(details, row.details);
            if (row.role === 'stable' && !actions.firstChild) {
              actions.append(
                button('rollback', 'Rollback', { handler: info.name }, 'serve the version before (ends a canary or shadow)'),
                button('promote', 'Promote', { handler: info.name }, 'make the canary or shadow the serving version'));
            }
            const back = actions.querySelector('button.rollback');
            if (back) back.disabled = !info.previous_version && !info.canary && !info.shadow;
          },
        });
      }
    }
    syncRows(document.querySelector('#handlers tbody'), specs);
  }

  function renderLag() {
    const tbody = document.querySelector('#lag tbody');
    if (!state.topics) {
      syncRows(tbody, [{
        key: 'none',
        make: () => el('tr', {}, el('td', { colspan: 7, class: 'muted' })),
        update: (row) => setText(row.cells[0], state.topicsError || 'loading…'),
      }]);
      return;
    }
    syncRows(tbody, state.topics.map((t) => ({
      key: `${t.stage}|${t.topic}|${t.partition}`,
      make: () => el('tr', { 'data-stage': t.stage, 'data-partition': t.partition },
        cell(''), cell('mono'), cell('num'), cell('num'), cell('num'), cell('num'), cell('num lag')),
      update: (row) => {
        const values = [t.stage, t.topic, t.partition, t.low, t.high, t.committed === null ? '—' : t.committed, t.lag];
        values.forEach((value, i) => setText(row.cells[i], value));
      },
    })));
  }

  function renderDeadLetters() {
    const tbody = document.querySelector('#dead-letters tbody');
    if (!state.deadLetters.length) {
      syncRows(tbody, [{
        key: 'none',
        make: () => el('tr', {}, el('td', { colspan: 6, class: 'muted' }, 'none since the host started')),
        update: () => {},
      }]);
      return;
    }
    syncRows(tbody, state.deadLetters.map((letter) => ({
      key: String(letter.seq),
      make: () => el('tr', { class: 'dead-letter', 'data-stage': letter.stage, 'data-kind': letter.kind },
        cell('mono small'), cell(''), cell('kind'), cell('mono'), cell('mono small'), cell('reason')),
      update: (row) => {
        const handler = letter.handler ? `${letter.handler}@${short(letter.version)}` : '—';
        const values = [letter.at, letter.stage, letter.kind, handler,
          `${letter.topic}/${letter.partition}/${letter.offset}`, letter.reason];
        values.forEach((value, i) => setText(row.cells[i], value));
      },
    })));
  }

  // ---- polling ----
  async function pollMetrics() {
    const text = await api('GET', '/metrics');
    const { counts, lag } = totals(parseMetrics(text));
    state.samples.push({ at: performance.now(), counts, lag });
    while (state.samples.length > 2 && state.samples[state.samples.length - 1].at - state.samples[1].at >= RATE_WINDOW_MS) {
      state.samples.shift();
    }
    state.rates = ratesOf(state.samples);
  }

  async function pollGraph() {
    const graph = await api('GET', '/graph');
    const key = JSON.stringify({ t: graph.topics, s: graph.stages, e: graph.edges });
    state.graph = graph;
    setText(document.getElementById('config'), graph.config || '');
    if (key !== state.graphKey) {
      state.graphKey = key;
      drawGraph(graph);
    }
  }

  async function pollTopics() {
    try {
      state.topics = await api('GET', '/topics');
      state.topicsError = '';
    } catch (err) {
      if (err.status === 401) throw err;
      state.topics = null;
      state.topicsError = `lag from the metrics only: ${err.message}`;
    }
  }

  async function pollHandlers() {
    state.handlers = await api('GET', '/handlers');
  }

  async function pollDeadLetters() {
    state.deadLetters = await api('GET', '/dead-letters');
  }

  function render() {
    if (state.graph) {
      updateGraphRates();
      renderStages();
    }
    renderHandlers();
    renderLag();
    renderDeadLetters();
  }

  let ticks = 0;
  let running = false;
  async function tick() {
    if (running) return;
    running = true;
    try {
      const every = (n) => ticks % n === 0;
      const polls = [pollMetrics(), pollHandlers()];
      if (every(2) || !state.graph) polls.push(pollGraph());
      if (every(2)) polls.push(pollTopics(), pollDeadLetters());
      const results = await Promise.allSettled(polls);
      const failed = results.find((r) => r.status === 'rejected');
      render();
      if (failed) {
        if (failed.reason.status !== 401) setStatus(`error: ${failed.reason.message}`, true);
      } else {
        document.getElementById('login').hidden = true;
        setStatus(`live · updated ${new Date().toLocaleTimeString()}`);
      }
    } finally {
      ticks += 1;
      running = false;
    }
  }

  // ---- actions ----
  const ACTIONS = {
    rollback: (d) => ['POST', `/handlers/${encodeURIComponent(d.handler)}/rollback`,
      (info) => `rolled back ${d.handler}: ${short(info.version)} serves now`],
    promote: (d) => ['POST', `/handlers/${encodeURIComponent(d.handler)}/promote`,
      (info) => `promoted ${d.handler}: ${short(info.version)} serves every key`],
    pause: (d) => ['POST', `/stages/${encodeURIComponent(d.stage)}/pause`,
      () => `paused ${d.stage}: it takes nothing new, nothing is lost`],
    resume: (d) => ['POST', `/stages/${encodeURIComponent(d.stage)}/resume`,
      () => `resumed ${d.stage}`],
    redrive: (d) => ['POST', `/stages/${encodeURIComponent(d.stage)}/redrive`,
      (answer) => answer.summary],
  };

  async function act(target) {
    const data = target.dataset;
    const action = data.action;
    if (action === 'redrive') {
      // A dry run first, so the operator sees how many letters would go.
      try {
        const dry = await api('POST', `/stages/${encodeURIComponent(data.stage)}/redrive?dry_run=true`);
        if (dry.sent === 0) {
          say(dry.summary);
          return;
        }
        if (!window.confirm(`${dry.summary}. Send them back through ${data.stage}?`)) return;
      } catch (err) {
        say(err.message, true);
        return;
      }
    }
    const [method, path, done] = ACTIONS[action](data);
    target.disabled = true;
    try {
      const answer = await api(method, path);
      say(done(answer));
    } catch (err) {
      say(err.message, true);
    } finally {
      target.disabled = false;
      await tick();
    }
  }

  document.addEventListener('click', (event) => {
    const target = event.target.closest('button[data-action]');
    if (target && !target.disabled) act(target);
  });

  document.getElementById('login').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = document.getElementById('token');
    sessionStorage.setItem(TOKEN_KEY, input.value);
    state.token = input.value;
    input.value = '';
    tick();
  });

  takeToken();
  tick();
  setInterval(tick, 1000);
})();
