/// The console's page, embedded in the binary: no third-party asset, nothing fetched
/// from elsewhere. The script builds every element with `createElement` and sets data
/// only through `textContent` (never `innerHTML`), so agent text stays text; the
/// Content-Security-Policy allows only these same-origin files.
enum ConsolePage {
    /// The page; `session` (hex, this tab's) is put in the two file links, which the browser
    /// loads itself, and in a meta element the script reads.
    static func html(session: String) -> String {
        """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Lanyard approvals</title>
        <meta name="lanyard-session" content="\(session)">
        <link rel="stylesheet" href="/console.css?session=\(session)">
        <script src="/console.js?session=\(session)" defer></script>
        </head>
        <body>
        <header>
          <h1>Lanyard approvals</h1>
          <span id="who"></span>
          <span id="live" class="off">connecting…</span>
        </header>
        <div id="problem" role="alert" hidden></div>
        <div id="notice" role="status"></div>
        <main>
          <section id="pending-section">
            <h2>Pending <span id="pending-count"></span></h2>
            <p id="pending-empty" class="empty">No pending requests.</p>
            <div id="pending"></div>
            <ul id="pending-hidden"></ul>
          </section>
          <section id="overview" hidden>
            <h2>Overview</h2>
            <div id="overview-error" class="message error"></div>
            <dl id="stats"></dl>
            <h3>Decisions per agent <span class="legend"><i class="allow"></i>allow <i class="deny"></i>deny <i class="pending"></i>pending</span></h3>
            <div id="chart"></div>
            <h3>Agents and their active leases</h3>
            <table id="agents"><thead><tr><th>agent</th><th>uid</th><th>unit</th><th>exe</th><th>active leases</th></tr></thead><tbody></tbody></table>
          </section>
          <section id="history-section">
            <h2>History</h2>
            <p id="history-empty" class="empty">Nothing decided yet.</p>
            <table id="history"><thead><tr><th>state</th><th>risk</th><th>agent</th><th>wants</th><th>resource</th><th>code</th><th>approvers</th><th>requested</th></tr></thead><tbody></tbody></table>
          </section>
        </main>
        </body>
        </html>
        """
    }

    static let script = #"""
    'use strict';
    (function () {
      // This tab's session, kept in memory only; the link's one-time token leaves the address bar.
      const token = document.querySelector('meta[name="lanyard-session"]').content;
      history.replaceState(null, '', '/');
      const $ = (id) => document.getElementById(id);
      let state = null;
      let stopped = false;
      let overviewAt = 0;
      let overviewTimer = null;

      function el(tag, cls, text) {
        const e = document.createElement(tag);
        if (cls) e.className = cls;
        if (text !== undefined) e.textContent = String(text);
        return e;
      }
      function svg(tag, attrs) {
        const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
        for (const k of Object.keys(attrs)) e.setAttribute(k, String(attrs[k]));
        return e;
      }
      function call(path, body) {
        const init = { cache: 'no-store', headers: { 'X-Lanyard-Token': token } };
        if (body !== undefined) {
          init.method = 'POST';
          init.headers['Content-Type'] = 'application/json';
          init.body = JSON.stringify(body);
        }
        return fetch(path, init).then(async (r) => {
          let j;
          try { j = await r.json(); } catch (e) { j = { error: 'The console answered ' + r.status + '.' }; }
          return { status: r.status, body: j };
        }, () => ({ status: 0, body: { error: 'The console (lanyardctl console) does not answer: start it again.' } }));
      }
      const pause = (ms) => new Promise((done) => setTimeout(done, ms));
      function when(seconds) { return new Date(seconds * 1000).toLocaleString(); }
      function left(expires) {
        const s = Math.round(expires - Date.now() / 1000);
        if (s <= 0) return 'expired';
        if (s < 120) return s + ' s left';
        if (s < 7200) return Math.floor(s / 60) + ' min left';
        return Math.floor(s / 3600) + ' h left';
      }
      function problem(text) {
        const p = $('problem');
        p.textContent = text || '';
        p.hidden = !text;
      }

      // Live updates: server-sent events read from fetch (so the token goes in a header).
      // A refusal or a refused connection means this console is gone (whatever listens on its
      // port now is not it): stop asking and say so, rather than show another's answers.
      async function listen() {
        for (;;) {
          let r;
          try {
            r = await fetch('/api/events', { cache: 'no-store', headers: { 'X-Lanyard-Token': token } });
          } catch (e) { r = null; }
          if (!r || r.status === 403) return stop();
          try {
            if (!r.ok) throw new Error('refused');
            live(true);
            const reader = r.body.getReader();
            const decoder = new TextDecoder();
            let buffer = '';
            for (;;) {
              const { value, done } = await reader.read();
              if (done) break;
              buffer += decoder.decode(value, { stream: true });
              let end;
              while ((end = buffer.indexOf('\n\n')) >= 0) {
                event(buffer.slice(0, end));
                buffer = buffer.slice(end + 2);
              }
              if (buffer.length > 4 * 1024 * 1024) buffer = '';
            }
          } catch (e) { /* reconnect below */ }
          live(false);
          await pause(2000);
        }
      }
      function stop() {
        stopped = true;
        const l = $('live');
        l.textContent = 'stopped';
        l.className = 'off';
        document.body.classList.add('stopped');
        for (const b of document.querySelectorAll('button')) b.disabled = true;
        problem('This console has stopped (lanyardctl console was ended, or this page is from an earlier run). '
          + 'This page asks nothing more; start lanyardctl console again and open the link it prints.');
        settle();
      }
      function live(on) {
        const l = $('live');
        l.textContent = on ? 'live' : 'not connected';
        l.className = on ? 'on' : 'off';
      }
      function event(block) {
        let name = 'message';
        let data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('event: ')) name = line.slice(7);
          else if (line.startsWith('data: ')) data += line.slice(6);
        }
        if (!data) return;
        const value = JSON.parse(data);
        if (stopped) return;
        if (name === 'state') render(value);
        else if (name === 'unreachable') problem(value.problem);
      }

      // Nothing moves under the pointer: cards already shown keep their place, new ones go
      // below them (most urgent first among themselves), and after any change of the layout
      // the Approve buttons wait `settleMs` before they take a click.
      const riskOrder = { HIGH: 0, MEDIUM: 1, LOW: 2 };
      const settleMs = 1000;
      // Cards shown per agent: one agent's flood does not push the others' requests away.
      const perAgent = 5;
      let settleTimer = null;
      function settle() {
        for (const b of document.querySelectorAll('#pending button.approve')) b.disabled = true;
        clearTimeout(settleTimer);
        settleTimer = setTimeout(() => {
          settleTimer = null;
          if (stopped) return;
          for (const c of document.querySelectorAll('#pending article:not(.sending)')) c.querySelector('button.approve').disabled = false;
        }, settleMs);
      }
      function render(s) {
        state = s;
        const before = layout();
        document.body.classList.toggle('unreachable', !s.reachable);
        problem(s.problem);
        if (s.me) {
          const roles = [s.me.admin ? 'admin' : '', s.me.approver ? 'approver' : ''].filter(Boolean);
          $('who').textContent = 'acting as uid ' + s.me.uid + (roles.length ? ' (' + roles.join(', ') + ')' : ' (neither admin nor approver)');
        }
        const pending = s.pending.slice().sort((a, b) =>
          (riskOrder[a.risk] - riskOrder[b.risk]) || (a.expires_at - b.expires_at) || (b.created_at - a.created_at));
        const box = $('pending');
        const shownOf = {};
        const hiddenOf = {};
        for (const card of box.children) if (pending.some((a) => a.id === card.dataset.id)) shownOf[card.dataset.agent] = (shownOf[card.dataset.agent] || 0) + 1;
        const keep = new Set();
        for (const a of pending) {
          let card = box.querySelector('[data-id="' + CSS.escape(a.id) + '"]');
          if (!card) {
            if ((shownOf[a.agent] || 0) >= perAgent) { hiddenOf[a.agent] = (hiddenOf[a.agent] || 0) + 1; continue; }
            shownOf[a.agent] = (shownOf[a.agent] || 0) + 1;
            card = makeCard(a);
            box.appendChild(card);
          }
          keep.add(a.id);
          card.querySelector('.approvers').textContent = a.approvers.length ? a.approvers.join(', ') : 'none yet';
        }
        for (const card of Array.from(box.children)) if (!keep.has(card.dataset.id)) card.remove();
        const hidden = $('pending-hidden');
        hidden.replaceChildren();
        for (const agent of Object.keys(hiddenOf).sort()) {
          hidden.appendChild(el('li', '', '+' + hiddenOf[agent] + ' not shown from ' + agent + ' (decide the ones shown, or use lanyardctl approvals list)'));
        }
        if (s.omitted) hidden.appendChild(el('li', '', '+' + s.omitted + ' not shown: lanyardd listed only the newest (lanyardctl approvals list shows them)'));
        $('pending-count').textContent = pending.length ? '(' + pending.length + (s.omitted ? ' + ' + s.omitted + ' not shown' : '') + ')' : '';
        $('pending-empty').hidden = pending.length > 0;
        if (layout() !== before) settle();
        renderHistory(s.history);
        tick();
        if (s.me && s.me.admin) overviewSoon();
      }

      // What decides where the cards are: the cards in order, what they list that an update
      // may change, and what is shown above them.
      function layout() {
        return [Array.from($('pending').children, (c) => c.dataset.id).join(' '),
          Array.from(document.querySelectorAll('#pending .approvers'), (e) => e.textContent).join(' '),
          $('problem').hidden, $('problem').textContent].join('|');
      }

      function row(dl, label, value, cls) {
        dl.appendChild(el('dt', '', label));
        const dd = el('dd', cls || '', value);
        dl.appendChild(dd);
        return dd;
      }
      function makeCard(a) {
        const card = el('article', 'card risk-' + a.risk.toLowerCase());
        card.dataset.id = a.id;
        card.dataset.agent = a.agent;
        const top = el('div', 'top');
        top.appendChild(el('span', 'risk', a.risk));
        top.appendChild(el('span', 'caps', a.capabilities.join(', ')));
        const t = el('span', 'left');
        t.dataset.expires = a.expires_at;
        top.appendChild(t);
        card.appendChild(top);
        // A HIGH card shows no code: the approver types the one the agent shows in its own
        // output, so a look-alike request cannot hand over its own code to be copied.
        if (a.risk !== 'HIGH') {
          const codeLine = el('div', 'codeline');
          codeLine.appendChild(el('span', '', 'binding code '));
          codeLine.appendChild(el('span', 'code', a.code));
          card.appendChild(codeLine);
        }
        const dl = el('dl', 'context');
        row(dl, 'agent', a.agent, 'agent');
        row(dl, 'process', 'uid ' + a.uid + ', pid ' + a.pid);
        row(dl, 'exe', a.exe || 'unknown', 'exe');
        row(dl, 'unit', a.unit || '(none)', 'unit');
        row(dl, 'capabilities', a.capabilities.join(', '), 'capabilities');
        row(dl, 'resource', a.resource || '(none)', 'resource');
        const args = row(dl, 'args', a.args.length ? '' : '(none)', 'args');
        for (const [k, v] of a.args) {
          const line = el('div', 'arg');
          line.appendChild(el('span', 'key', k));
          line.appendChild(el('span', 'eq', ' = '));
          line.appendChild(el('span', 'value', v));
          args.appendChild(line);
        }
        row(dl, 'amount', a.amount || '(none)', 'amount');
        row(dl, 'why', a.reason, 'reason');
        row(dl, 'requested', when(a.created_at));
        row(dl, 'approvals', '', 'approvers');
        card.appendChild(dl);

        const act = el('div', 'actions');
        const approveBox = el('div', 'approve-box');
        let code = null;
        let mode = null;
        if (a.risk === 'HIGH') {
          const label = el('label', '', 'Type the binding code the agent shows you in its own output (this page does not show it): ');
          code = el('input', 'code-input');
          code.autocomplete = 'off';
          code.placeholder = 'XXXX-XXXX';
          code.maxLength = 32;
          label.appendChild(code);
          approveBox.appendChild(label);
        } else {
          mode = el('select', 'mode');
          for (const [value, text] of [['once', 'once'], ['15m', 'for 15 minutes'], ['1h', 'for 1 hour'], ['8h', 'for 8 hours'],
            ['1d', 'for 1 day'], ['process', "for the process's lifetime"]]) {
            const o = el('option', '', text);
            o.value = value;
            mode.appendChild(o);
          }
          approveBox.appendChild(mode);
        }
        const approve = el('button', 'approve', 'Approve');
        approve.type = 'button';
        approveBox.appendChild(approve);
        act.appendChild(approveBox);
        const denyBox = el('div', 'deny-box');
        const reason = el('input', 'reason-input');
        reason.placeholder = 'reason (shown to the agent)';
        reason.maxLength = 256;
        denyBox.appendChild(reason);
        const deny = el('button', 'deny', 'Deny');
        deny.type = 'button';
        denyBox.appendChild(deny);
        act.appendChild(denyBox);
        card.appendChild(act);
        const message = el('div', 'message');
        message.setAttribute('role', 'status');
        card.appendChild(message);

        approve.addEventListener('click', () => {
          const body = { id: a.id, approve: true };
          if (code) {
            if (!code.value.trim()) { say(message, false, 'Type the binding code the agent shows you in its own output first.'); return; }
            body.code = code.value.trim();
          } else {
            body.for = mode.value;
            const lasting = mode.options[mode.selectedIndex].text;
            if (mode.value !== 'once' && !window.confirm('Approve ' + a.capabilities.join(', ') + ' for agent ' + a.agent + ' ' + lasting
              + '? Its matching requests are then approved without asking you.')) { say(message, false, 'Not approved.'); return; }
          }
          send(card, message, body);
        });
        deny.addEventListener('click', () => send(card, message, { id: a.id, approve: false, reason: reason.value }));
        return card;
      }
      function say(message, ok, text) {
        message.className = 'message ' + (ok ? 'ok' : 'error');
        message.textContent = text;
      }
      function send(card, message, body) {
        card.classList.add('sending');
        for (const b of card.querySelectorAll('button')) b.disabled = true;
        say(message, true, 'sending…');
        call('/api/decide', body).then((r) => {
          card.classList.remove('sending');
          if (stopped) return;
          for (const b of card.querySelectorAll('button')) b.disabled = b.classList.contains('approve') && settleTimer !== null;
          if (r.status === 200) {
            say(message, true, r.body.state + ' by you.');
            const n = $('notice');
            n.textContent = r.body.state + ': ' + r.body.approval.capabilities.join(', ') + ' for ' + r.body.approval.agent;
          } else say(message, false, r.body.error || ('The console answered ' + r.status + '.'));
        });
      }
      function tick() {
        for (const t of document.querySelectorAll('#pending .left')) t.textContent = left(Number(t.dataset.expires));
      }

      function renderHistory(list) {
        const body = $('history').querySelector('tbody');
        body.replaceChildren();
        for (const a of list) {
          const tr = el('tr', 'state-' + a.state.toLowerCase());
          for (const v of [a.state, a.risk, a.agent, a.capabilities.join(', '), a.resource, a.code, a.approvers.join(', '), when(a.created_at)]) {
            tr.appendChild(el('td', '', v));
          }
          body.appendChild(tr);
        }
        $('history-empty').hidden = list.length > 0;
        $('history').hidden = list.length === 0;
      }

      // The admin overview: asked again on each change (at most every 2 s) and every 15 s.
      function overviewSoon() {
        if (overviewTimer) return;
        const wait = Math.max(0, overviewAt + 2000 - Date.now());
        overviewTimer = setTimeout(() => { overviewTimer = null; overview(); }, wait);
      }
      function overview() {
        if (stopped) return;
        overviewAt = Date.now();
        call('/api/overview').then((r) => {
          $('overview').hidden = false;
          if (r.status !== 200) { $('overview-error').textContent = r.body.error; return; }
          $('overview-error').textContent = '';
          drawOverview(r.body);
        });
      }
      function drawOverview(o) {
        const dl = $('stats');
        dl.replaceChildren();
        row(dl, 'lanyardd', o.version + ', up ' + Math.floor(o.uptime_seconds / 60) + ' min, policy ' + o.policy_version);
        row(dl, 'active leases', o.active_leases);
        row(dl, 'pending approvals', o.pending_approvals);
        row(dl, 'audit chain head', 'record ' + o.audit_head, 'audit-head');
        const v = row(dl, 'last verification', '', 'verify');
        if (o.verify) {
          v.appendChild(el('span', o.verify.ok ? 'ok' : 'bad',
            (o.verify.ok ? 'intact: ' : 'BROKEN at record ' + o.verify.first_broken_seq + ': ' + o.verify.reason + '; ') +
            o.verify.records + ' records, head ' + o.verify.head_hash.slice(0, 16) + '…, ' + when(o.verify.at)));
        } else v.appendChild(el('span', '', 'not verified by this console yet '));
        const b = el('button', 'verify-now', 'Verify now');
        b.type = 'button';
        b.addEventListener('click', () => { b.disabled = true; call('/api/verify', {}).then(() => overview()); });
        v.appendChild(b);
        row(dl, 'upstream revocations queued', o.upstream_revocations, 'revocations');
        drawChart(o.agents, o.counts_partial);
        const body = $('agents').querySelector('tbody');
        body.replaceChildren();
        for (const a of o.agents) {
          const tr = el('tr');
          const services = a.leases.map((l) => l.service);
          for (const value of [a.name, a.in_policy ? a.uid : '(not in the policy)', a.unit || '—', a.exe || '—',
            a.leases.length ? a.leases.length + ': ' + services.join(', ') : 'none']) tr.appendChild(el('td', '', value));
          body.appendChild(tr);
        }
      }
      function drawChart(agents, partial) {
        const box = $('chart');
        box.replaceChildren();
        const labelW = 140, barW = 260, rowH = 18, gap = 8;
        const windows = [['hour', 'last hour'], ['day', 'last day']];
        const height = agents.length * (2 * rowH + gap) + 24;
        const root = svg('svg', { width: labelW + barW + 90, height: height, role: 'img', 'aria-label': 'decisions per agent' });
        for (const [w, label] of windows) {
          const max = Math.max(1, ...agents.map((a) => a[w].allow + a[w].deny + a[w].pending));
          agents.forEach((a, i) => {
            const y = 20 + i * (2 * rowH + gap) + (w === 'day' ? rowH : 0);
            if (w === 'hour') {
              const t = svg('text', { x: 0, y: y + 13, class: 'name' });
              t.textContent = a.name;
              root.appendChild(t);
            }
            const wl = svg('text', { x: labelW - 60, y: y + 13, class: 'window' });
            wl.textContent = label;
            root.appendChild(wl);
            let x = labelW;
            for (const kind of ['allow', 'deny', 'pending']) {
              const width = a[w][kind] / max * barW;
              if (width > 0) root.appendChild(svg('rect', { x: x, y: y + 2, width: width, height: rowH - 4, class: kind }));
              x += width;
            }
            const n = svg('text', { x: x + 6, y: y + 13, class: 'count' });
            n.textContent = a[w].allow + ' / ' + a[w].deny + ' / ' + a[w].pending;
            root.appendChild(n);
          });
        }
        const head = svg('text', { x: labelW, y: 12, class: 'window' });
        head.textContent = 'allow / deny / pending' + (partial ? ' (the day has more records than counted)' : '');
        root.appendChild(head);
        box.appendChild(root);
      }

      setInterval(tick, 1000);
      setInterval(() => { if (state && state.me && state.me.admin) overviewSoon(); }, 15000);
      call('/api/state').then((r) => { if (r.status === 200) render(r.body); else problem(r.body.error); });
      listen();
    })();
    """#

    static let style = """
    :root { font-family: system-ui, sans-serif; color: #1d2330; background: #f4f5f7; }
    body { margin: 0; }
    header { display: flex; align-items: baseline; gap: 1.5em; padding: .8em 1.5em; background: #1d2330; color: #fff; }
    header h1 { font-size: 1.2em; margin: 0; }
    #live.on { color: #7ee2a8; } #live.off { color: #ffb86b; }
    main { padding: 0 1.5em 2em; display: grid; gap: 1em; }
    h2 { font-size: 1.05em; margin: 1.2em 0 .5em; } h3 { font-size: .95em; margin: 1em 0 .3em; }
    #problem { margin: 1em 1.5em 0; padding: .8em 1em; background: #ffe3e0; border: 1px solid #d9534f; color: #7a1c17; font-weight: 600; white-space: pre-wrap; overflow-wrap: anywhere; }
    #notice { margin: .5em 1.5em 0; color: #1d6b3a; height: 1.2em; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
    body.unreachable main, body.stopped main { opacity: .45; }
    #pending-hidden { color: #a12a24; margin: 0; }
    .empty { color: #667; }
    .card { background: #fff; border: 1px solid #cfd4dc; border-left: 6px solid #e0a030; border-radius: 6px; padding: .8em 1em; margin-bottom: .8em; max-width: 70em; }
    .card.risk-high { border-left-color: #d9534f; }
    .top { display: flex; gap: 1em; align-items: baseline; }
    .risk { font-weight: 700; font-size: .8em; padding: .1em .5em; border-radius: 3px; background: #e0a030; color: #fff; }
    .risk-high .risk { background: #d9534f; }
    .caps { font-weight: 600; font-family: ui-monospace, monospace; overflow-wrap: anywhere; }
    .left { margin-left: auto; color: #555; }
    .codeline { margin: .4em 0; } .code { font-family: ui-monospace, monospace; font-size: 1.3em; font-weight: 700; letter-spacing: .08em; }
    dl.context, #stats { display: grid; grid-template-columns: 9em 1fr; gap: .2em .8em; margin: .4em 0; }
    dt { color: #667; } dd { margin: 0; font-family: ui-monospace, monospace; white-space: pre-wrap; overflow-wrap: anywhere; max-height: 12em; overflow: auto; }
    #stats dd { font-family: inherit; }
    .arg .key { color: #35517a; }
    .actions { display: flex; gap: 2em; flex-wrap: wrap; margin-top: .6em; }
    .actions input, .actions select { padding: .3em; margin-right: .4em; }
    button { padding: .35em 1em; border-radius: 4px; border: 1px solid #889; background: #fff; cursor: pointer; }
    button.approve { background: #1d6b3a; color: #fff; border-color: #1d6b3a; }
    button.deny { background: #fff; color: #a12a24; border-color: #a12a24; }
    button:disabled { opacity: .5; }
    .message { margin-top: .4em; min-height: 1.2em; overflow-wrap: anywhere; } .message.ok { color: #1d6b3a; } .message.error { color: #a12a24; font-weight: 600; }
    table { border-collapse: collapse; background: #fff; font-size: .9em; max-width: 100%; }
    th, td { border: 1px solid #dde; padding: .25em .6em; text-align: left; vertical-align: top; max-width: 24em; overflow-wrap: anywhere; }
    th { background: #eef0f4; }
    tr.state-denied td:first-child, tr.state-expired td:first-child { color: #a12a24; } tr.state-approved td:first-child, tr.state-consumed td:first-child { color: #1d6b3a; }
    #overview { background: #fff; border: 1px solid #cfd4dc; border-radius: 6px; padding: 0 1em 1em; max-width: 70em; }
    .ok { color: #1d6b3a; } .bad { color: #a12a24; font-weight: 700; }
    .verify-now { margin-left: .8em; font-size: .85em; }
    svg text { font-size: 12px; fill: #1d2330; } svg text.window { fill: #667; } svg text.count { fill: #444; }
    svg rect.allow, .legend i.allow { fill: #2e9d5b; background: #2e9d5b; }
    svg rect.deny, .legend i.deny { fill: #d9534f; background: #d9534f; }
    svg rect.pending, .legend i.pending { fill: #e0a030; background: #e0a030; }
    .legend { font-weight: 400; font-size: .85em; color: #556; margin-left: 1em; }
    .legend i { display: inline-block; width: .8em; height: .8em; margin: 0 .3em 0 .8em; vertical-align: -1px; }
    """
}
