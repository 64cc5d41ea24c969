// The OpenGeni web console: plain ES modules, no framework. Pages route on
// location.pathname; every request carries the session cookie (HttpOnly,
// set by the server) and state-changing ones the CSRF token.
import { Terminal } from './xterm.mjs';
import { FitAddon } from './addon-fit.mjs';
import { h, clear, spark, ago, bytes, b64bytes, shown } from './dom.js';

const main = document.getElementById('main');
let csrf = '';
let stopPage = () => {};

class HttpError extends Error {
  constructor(status, message, code) { super(message); this.status = status; this.code = code; }
}

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: 'same-origin' };
  if (method !== 'GET') opts.headers['X-CSRF-Token'] = csrf;
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(path, opts);
  let data = null;
  try { data = await res.json(); } catch { data = null; }
  if (!res.ok) {
    if (res.status === 401 && path !== '/api/login') { showSignIn(); }
    throw new HttpError(res.status, (data && data.error) || `HTTP ${res.status}`, data && data.code);
  }
  return data;
}

const mpath = (id, rest = '') => `/api/machines/${encodeURIComponent(id)}${rest}`;

function errorBox(err) { return h('p', { class: 'error', role: 'alert' }, String(err.message || err)); }

function navigate(path) {
  history.pushState(null, '', path);
  route();
}

document.addEventListener('click', (e) => {
  const a = e.target.closest('a[data-nav]');
  if (!a || e.ctrlKey || e.metaKey || e.shiftKey) return;
  e.preventDefault();
  navigate(a.getAttribute('href'));
});
window.addEventListener('popstate', () => route());
document.getElementById('signout').addEventListener('click', async () => {
  try { await api('POST', '/api/logout'); } catch { /* signed out anyway */ }
  csrf = '';
  showSignIn();
});

// ---- sign-in ----

function showSignIn() {
  stopPage();
  stopPage = () => {};
  document.getElementById('nav').hidden = true;
  const input = h('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'current-password', required: true, size: 60 });
  const msg = h('p', { id: 'signin-msg' });
  const form = h('form', { id: 'signin', onsubmit: async (e) => {
    e.preventDefault();
    try {
      const s = await api('POST', '/api/login', { token: input.value });
      csrf = s.csrf;
      route();
    } catch (err) { clear(msg, errorBox(err)); }
  } },
  h('h1', {}, 'Sign in'),
  h('p', {}, 'Paste the admin token (relay dev: the file admin.token in its data directory).'),
  h('label', {}, 'Admin token ', input), ' ', h('button', { type: 'submit' }, 'Sign in'), msg,
  location.pathname === '/device'
    ? h('p', { class: 'muted' }, 'To approve a device from a terminal on the platform\u2019s host instead: relay ctl approve ',
      new URLSearchParams(location.search).get('user_code') || new URLSearchParams(location.search).get('code') || 'CODE', '.')
    : null);
  clear(main, form);
  input.focus();
}

async function route() {
  stopPage();
  stopPage = () => {};
  if (!csrf) {
    const s = await api('GET', '/api/session');
    if (!s.signedIn) { showSignIn(); return; }
    csrf = s.csrf;
  }
  document.getElementById('nav').hidden = false;
  const p = location.pathname;
  const m = p.match(/^\/machines\/([^/]+)$/);
  if (m) return machinePage(decodeURIComponent(m[1]));
  if (p === '/device') return devicePage();
  if (p === '/pairing') return pairingPage();
  return machinesPage();
}

// poll runs f now and every ms until the page changes.
function poll(f, ms) {
  let live = true;
  let timer;
  const tick = async () => {
    if (!live) return;
    try { await f(); } catch { /* shown by f */ }
    if (live) timer = setTimeout(tick, ms);
  };
  tick();
  return () => { live = false; clearTimeout(timer); };
}

function stateBadge(m) {
  const title = m.state === 'offline' && m.offlineReason ? `offline: ${m.offlineReason}` : m.state;
  return h('span', { class: `badge ${m.state}`, title: shown(title), 'data-state': m.state }, m.state);
}

function displayText(m) {
  if (!m.display) return m.desktop ? 'yes' : 'none';
  return `${m.display.width}×${m.display.height}${m.display.virtual ? ' (virtual)' : ''}`;
}

// ---- machines ----

function machinesPage() {
  const body = h('tbody', { id: 'machines' });
  const status = h('p', { class: 'muted' });
  clear(main, h('h1', {}, 'Machines'), status,
    h('table', { class: 'list' }, h('thead', {}, h('tr', {},
      ['Name', 'State', 'Last seen', 'OS / arch', 'Version', 'Display', 'Screen control', 'CPU / memory'].map((t) => h('th', {}, t)))), body));
  stopPage = poll(async () => {
    try {
      const { machines } = await api('GET', '/api/machines');
      clear(status, machines.length ? `${machines.length} machine(s), updated ${new Date().toLocaleTimeString()}` : 'No machines yet: pair one on the Pairing page.');
      clear(body, machines.map((m) => h('tr', { 'data-machine': m.id },
        h('td', {}, h('a', { href: `/machines/${encodeURIComponent(m.id)}`, 'data-nav': true, class: 'name' }, m.name || m.id),
          h('div', { class: 'muted small' }, m.id)),
        h('td', {}, stateBadge(m)),
        h('td', {}, ago(m.lastSeenAt)),
        h('td', {}, `${m.os || '?'} / ${m.arch || '?'}`),
        h('td', {}, m.version || '?'),
        h('td', {}, displayText(m)),
        h('td', { class: 'consent' }, m.screenControl ? 'allowed' : 'not allowed'),
        h('td', { title: m.cpu.length ? `CPU ${m.cpu.at(-1).toFixed(0)}%, memory ${m.mem.at(-1).toFixed(0)}%` : 'no samples yet' },
          spark([[m.cpu, 'cpu'], [m.mem, 'mem']])))));
    } catch (err) { clear(status, errorBox(err)); throw err; }
  }, 2000);
}

// ---- one machine ----

function machinePage(id) {
  const head = h('div', { id: 'machine-head' });
  const panel = h('section', { id: 'panel' });
  let machine = null;
  let stopTab = () => {};
  const tabs = ['Terminal', 'Files', 'Desktop', 'Git', 'Command'];
  const tabBar = h('div', { class: 'tabs', role: 'tablist' }, tabs.map((t) => h('button', {
    type: 'button', id: `tab-${t.toLowerCase()}`, role: 'tab', onclick: () => open(t),
  }, t)));
  const open = (t) => {
    stopTab();
    for (const b of tabBar.children) b.setAttribute('aria-selected', String(b.textContent === t));
    clear(panel);
    const views = { Terminal: terminalTab, Files: filesTab, Desktop: desktopTab, Git: gitTab, Command: commandTab };
    stopTab = views[t](id, panel, () => machine) || (() => {});
  };
  clear(main, h('p', {}, h('a', { href: '/', 'data-nav': true }, '← Machines')), head, tabBar, panel);
  const stopPoll = poll(async () => {
    try {
      machine = await api('GET', mpath(id));
      clear(head, h('h1', {}, machine.name || machine.id, ' ', stateBadge(machine)),
        h('p', { class: 'muted' }, `${machine.os} / ${machine.arch} · agent ${machine.version || '?'} · last seen ${ago(machine.lastSeenAt)} · display ${displayText(machine)} · screen control ${machine.screenControl ? 'allowed' : 'not allowed'}`),
        spark([[machine.cpu, 'cpu'], [machine.mem, 'mem']], 240, 40));
      document.dispatchEvent(new CustomEvent('machine', { detail: machine }));
    } catch (err) { clear(head, errorBox(err)); throw err; }
  }, 2000);
  open(new URLSearchParams(location.search).get('tab') || 'Terminal');
  stopPage = () => { stopPoll(); stopTab(); };
}

// Terminal: output as server-sent events with byte offsets as ids; the
// browser's EventSource resumes after the last id it saw, so a dropped
// connection loses nothing. The terminal id is kept for the tab's life, so
// a reload re-attaches and replays.
function terminalTab(id, panel) {
  const key = `terminal:${id}`;
  const box = h('div', { id: 'terminal', class: 'terminal' });
  const status = h('p', { id: 'terminal-status', class: 'muted' }, 'connecting…');
  const newBtn = h('button', { type: 'button', id: 'terminal-new', onclick: () => { sessionStorage.removeItem(key); restart(); } }, 'New terminal');
  clear(panel, h('div', { class: 'row' }, newBtn, status), box);
  const term = new Terminal({ convertEol: false, cursorBlink: true, fontSize: 14, scrollback: 5000 });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();
  let tid = sessionStorage.getItem(key);
  let es = null;
  let sending = Promise.resolve();
  let resizeTimer;
  const tpath = (rest) => mpath(id, `/terminals/${encodeURIComponent(tid)}${rest}`);
  const attach = () => {
    es = new EventSource(tpath('/output'));
    es.addEventListener('open', () => clear(status, 'connected'));
    es.addEventListener('data', (e) => term.write(b64bytes(e.data)));
    es.addEventListener('end', (e) => {
      es.close();
      sessionStorage.removeItem(key);
      clear(status, `ended: ${e.data}`);
    });
    // The browser reconnects by itself (from the last offset it saw); a
    // reload re-attaches through the stored id.
    es.addEventListener('error', () => clear(status, es.readyState === EventSource.CLOSED ? 'disconnected' : 'reconnecting…'));
  };
  const start = async () => {
    try {
      if (tid) { // re-attach, unless the terminal is gone
        try {
          await api('POST', tpath('/resize'), { cols: term.cols, rows: term.rows });
        } catch (err) {
          if (err.status !== 404) throw err;
          tid = null;
        }
      }
      if (!tid) {
        const r = await api('POST', mpath(id, '/terminals'), { cols: term.cols, rows: term.rows });
        tid = r.id;
        sessionStorage.setItem(key, tid);
      }
      attach();
      term.focus();
    } catch (err) { clear(status, errorBox(err)); }
  };
  const restart = () => { if (es) es.close(); tid = null; term.reset(); start(); };
  term.onData((d) => {
    if (!tid) return;
    const path = tpath('/input');
    sending = sending.then(() => api('POST', path, { data: d })).catch((err) => clear(status, errorBox(err)));
  });
  term.onResize(({ cols, rows }) => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (tid) api('POST', tpath('/resize'), { cols, rows }).catch(() => {}); }, 150);
  });
  const onWinResize = () => fit.fit();
  window.addEventListener('resize', onWinResize);
  start();
  return () => { window.removeEventListener('resize', onWinResize); if (es) es.close(); term.dispose(); };
}

function joinPath(dir, name) {
  if (!dir) return name;
  return dir.endsWith('/') ? dir + name : `${dir}/${name}`;
}

function parentPath(p) {
  if (!p || p === '/') return p === '/' ? '/' : '';
  const t = p.replace(/\/+$/, '');
  const i = t.lastIndexOf('/');
  if (i < 0) return '';
  return i === 0 ? '/' : t.slice(0, i);
}

function filesTab(id, panel) {
  let dir = sessionStorage.getItem(`files:${id}`) || '';
  const pathInput = h('input', { id: 'files-path', value: dir, size: 50, placeholder: '(workspace root)' });
  const list = h('tbody', { id: 'files' });
  const msg = h('div', { id: 'files-msg' });
  const progress = h('progress', { id: 'upload-progress', max: 100, value: 0, hidden: true });
  const progressText = h('span', { id: 'upload-status', class: 'muted' });
  const fileInput = h('input', { type: 'file', id: 'upload-file', onchange: () => upload() });
  const mkdirName = h('input', { id: 'mkdir-name', placeholder: 'new folder name' });
  const load = async (p) => {
    dir = p;
    pathInput.value = p;
    sessionStorage.setItem(`files:${id}`, p);
    clear(msg);
    try {
      const r = await api('GET', mpath(id, `/files?path=${encodeURIComponent(p)}`));
      r.entries.sort((a, b) => (a.kind === 'dir') === (b.kind === 'dir') ? a.name.localeCompare(b.name) : a.kind === 'dir' ? -1 : 1);
      clear(list, r.entries.map(row));
    } catch (err) { clear(list); clear(msg, errorBox(err)); }
  };
  const op = async (path, body, done) => {
    try { await api('POST', mpath(id, path), body); if (done) clear(msg, h('p', { class: 'ok' }, done)); await load(dir); } catch (err) { clear(msg, errorBox(err)); }
  };
  const row = (e) => {
    const full = e.path || joinPath(dir, e.name);
    const name = e.kind === 'dir'
      ? h('button', { type: 'button', class: 'link', onclick: () => load(full) }, `${e.name}/`)
      : h('a', { href: mpath(id, `/files/download?path=${encodeURIComponent(full)}`), download: e.name, class: 'download' }, e.name);
    const renameInput = h('input', { class: 'rename-to', value: e.name, hidden: true });
    const renameBtn = h('button', { type: 'button', class: 'rename', onclick: () => {
      if (renameInput.hidden) { renameInput.hidden = false; renameInput.focus(); renameBtn.textContent = 'Save name'; return; }
      op('/files/rename', { from: full, to: joinPath(dir, renameInput.value) }, `renamed to ${renameInput.value}`);
    } }, 'Rename');
    const delBtn = h('button', { type: 'button', class: 'delete', onclick: () => {
      if (delBtn.dataset.confirm !== 'yes') {
        delBtn.dataset.confirm = 'yes';
        delBtn.textContent = `Really delete ${e.kind === 'dir' ? 'folder' : 'file'}?`;
        delBtn.classList.add('danger');
        return;
      }
      op('/files/delete', { path: full }, `deleted ${e.name}`);
    } }, 'Delete');
    return h('tr', { 'data-name': e.name }, h('td', {}, name), h('td', {}, e.kind), h('td', {}, e.kind === 'file' ? bytes(e.size) : ''),
      h('td', {}, e.modifiedMs ? new Date(e.modifiedMs).toLocaleString() : ''), h('td', {}, renameInput, renameBtn, ' ', delBtn));
  };
  // Upload: the file is the request body; the server writes it with the
  // chunked, pipelined helpers (any size) and the bar follows the upload.
  const upload = () => {
    const f = fileInput.files[0];
    if (!f) return;
    const target = joinPath(dir, f.name);
    const xhr = new XMLHttpRequest();
    xhr.open('POST', mpath(id, `/files/upload?path=${encodeURIComponent(target)}`));
    xhr.setRequestHeader('X-CSRF-Token', csrf);
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    progress.hidden = false;
    progress.value = 0;
    clear(progressText, `uploading ${f.name}…`);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) progress.value = (100 * e.loaded) / e.total; };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        progress.value = 100;
        clear(progressText, `uploaded ${f.name} (${bytes(f.size)})`);
        progressText.dataset.done = target;
        load(dir);
      } else {
        let m = `HTTP ${xhr.status}`;
        try { m = JSON.parse(xhr.responseText).error || m; } catch { /* not JSON */ }
        clear(progressText, errorBox(m));
      }
      fileInput.value = '';
    };
    xhr.onerror = () => clear(progressText, errorBox('upload failed: the connection broke'));
    xhr.send(f);
  };
  clear(panel,
    h('form', { class: 'row', onsubmit: (e) => { e.preventDefault(); load(pathInput.value); } },
      h('button', { type: 'button', id: 'files-up', onclick: () => load(parentPath(dir)) }, 'Up'), pathInput, h('button', { type: 'submit' }, 'Open')),
    h('div', { class: 'row' }, h('label', {}, 'Upload ', fileInput), progress, progressText),
    h('form', { class: 'row', onsubmit: (e) => { e.preventDefault(); const name = mkdirName.value; if (name) { mkdirName.value = ''; op('/files/mkdir', { path: joinPath(dir, name) }, `created ${name}`); } } },
      mkdirName, h('button', { type: 'submit', id: 'mkdir' }, 'New folder')),
    msg,
    h('table', { class: 'list' }, h('thead', {}, h('tr', {}, ['Name', 'Kind', 'Size', 'Modified', ''].map((t) => h('th', {}, t)))), list));
  load(dir);
}

// Desktop: frames pushed as server-sent events; input only while the
// machine announces its owner's screen-control consent: without it the
// controls are disabled and no handler sends anything.
function desktopTab(id, panel, current) {
  const img = h('img', { id: 'desktop-frame', alt: 'the machine\u2019s desktop', draggable: false });
  const consentLine = h('p', { id: 'desktop-consent' });
  const status = h('p', { id: 'desktop-status', class: 'muted' }, 'starting the desktop…');
  const text = h('input', { id: 'desktop-text', placeholder: 'text to type', disabled: true });
  const typeBtn = h('button', { type: 'button', id: 'desktop-type', disabled: true }, 'Type');
  const enterBtn = h('button', { type: 'button', id: 'desktop-enter', disabled: true }, 'Enter');
  const shotLink = h('a', { href: mpath(id, '/desktop/screenshot'), download: 'screenshot.png', id: 'desktop-screenshot', class: 'button' }, 'Screenshot');
  let allowed = false;
  let es = null;
  const setConsent = (m) => {
    allowed = !!(m && m.screenControl);
    clear(consentLine, allowed
      ? h('span', { class: 'ok' }, 'Screen control: allowed by the machine\u2019s owner. Click the picture to click there.')
      : h('span', { class: 'warn' }, 'Screen control: not allowed by the machine\u2019s owner. View only; input is disabled (the owner can allow it on the machine: opengeni-agent consent screen-control on).'));
    consentLine.dataset.allowed = String(allowed);
    for (const el of [text, typeBtn, enterBtn]) el.disabled = !allowed;
    img.classList.toggle('interactive', allowed);
  };
  const send = async (body) => {
    if (!allowed) return; // never without consent
    try { await api('POST', mpath(id, '/desktop/input'), body); } catch (err) { clear(status, errorBox(err)); }
  };
  const pointer = (e, kind, button) => {
    if (!allowed || !img.naturalWidth) return;
    e.preventDefault();
    const r = img.getBoundingClientRect();
    const x = Math.floor(((e.clientX - r.left) * img.naturalWidth) / r.width);
    const y = Math.floor(((e.clientY - r.top) * img.naturalHeight) / r.height);
    send({ kind, button, x, y, width: img.naturalWidth, height: img.naturalHeight });
  };
  img.addEventListener('click', (e) => pointer(e, 'click', 'left'));
  img.addEventListener('dblclick', (e) => pointer(e, 'doubleclick', 'left'));
  img.addEventListener('contextmenu', (e) => pointer(e, 'click', 'right'));
  typeBtn.addEventListener('click', () => { if (text.value) send({ kind: 'type', text: text.value }); });
  enterBtn.addEventListener('click', () => send({ kind: 'key', text: 'Return' }));
  const onMachine = (e) => setConsent(e.detail);
  document.addEventListener('machine', onMachine);
  setConsent(current());
  clear(panel, consentLine, h('div', { class: 'row' }, text, typeBtn, enterBtn, shotLink), status, h('div', { class: 'desktop' }, img));
  (async () => {
    try {
      await api('POST', mpath(id, '/desktop/start'));
      es = new EventSource(mpath(id, '/desktop/frames'));
      es.addEventListener('frame', (e) => {
        img.src = `data:image/png;base64,${e.data}`;
        img.dataset.seq = e.lastEventId;
        clear(status, `frame ${e.lastEventId}`);
      });
      es.addEventListener('end', (e) => { es.close(); clear(status, `ended: ${e.data}`); });
    } catch (err) { clear(status, errorBox(err)); }
  })();
  return () => { document.removeEventListener('machine', onMachine); if (es) es.close(); };
}

function gitTab(id, panel) {
  const path = h('input', { id: 'git-path', placeholder: '(workspace root)', size: 50 });
  const out = h('div', { id: 'git-out' });
  const run = async () => {
    clear(out, 'reading…');
    try {
      const s = await api('POST', mpath(id, '/git/status'), { path: path.value });
      if (!s.isRepo) { clear(out, h('p', {}, 'Not a git repository.')); return; }
      clear(out,
        h('p', {}, `branch ${s.detached ? '(detached)' : s.head || '?'}`, s.upstream ? ` → ${s.upstream} (ahead ${s.ahead}, behind ${s.behind})` : ''),
        s.files.length === 0 ? h('p', { class: 'ok' }, 'Clean: nothing to commit.') :
          h('table', { class: 'list' }, h('thead', {}, h('tr', {}, ['Index', 'Worktree', 'Path'].map((t) => h('th', {}, t)))),
            h('tbody', {}, s.files.map((f) => h('tr', {}, h('td', {}, f.index), h('td', {}, f.worktree),
              h('td', {}, f.oldPath ? `${f.oldPath} → ${f.path}` : f.path, f.isConflicted ? ' (conflict)' : ''))))));
    } catch (err) { clear(out, errorBox(err)); }
  };
  clear(panel, h('form', { class: 'row', onsubmit: (e) => { e.preventDefault(); run(); } }, path, h('button', { type: 'submit', id: 'git-run' }, 'Git status')), out);
}

function commandTab(id, panel) {
  const cmd = h('input', { id: 'command', placeholder: 'a shell command, e.g. uname -a', size: 60 });
  const cwd = h('input', { id: 'command-cwd', placeholder: 'cwd (workspace root)', size: 30 });
  const out = h('div', { id: 'command-out' });
  const run = async () => {
    clear(out, 'running…');
    try {
      const r = await api('POST', mpath(id, '/exec'), { command: cmd.value, cwd: cwd.value });
      clear(out, h('p', { id: 'command-exit' }, `exit code ${r.exitCode}`), h('pre', { id: 'command-stdout' }, r.stdout),
        r.stderr ? h('pre', { id: 'command-stderr', class: 'stderr' }, r.stderr) : null);
    } catch (err) { clear(out, errorBox(err)); }
  };
  clear(panel, h('form', { class: 'row', onsubmit: (e) => { e.preventDefault(); run(); } }, cmd, cwd, h('button', { type: 'submit', id: 'command-run' }, 'Run')), out);
}

// ---- pairing ----

// /device (the URL agents print), with or without ?code= / ?user_code=.
function devicePage() {
  const q = new URLSearchParams(location.search);
  const code = h('input', { id: 'user-code', value: q.get('user_code') || q.get('code') || '', placeholder: 'XXXX-XXXX', size: 12, autocomplete: 'off' });
  const out = h('div', { id: 'device-out' });
  const lookup = async () => {
    clear(out, 'looking up…');
    try {
      const r = await api('POST', '/api/pairing/lookup', { userCode: code.value.trim() });
      const m = r.machine;
      const allow = h('input', { type: 'checkbox', id: 'allow-screen-control', checked: false });
      const result = h('div', { id: 'device-result' });
      const decide = async (what) => {
        try {
          if (what === 'approve') {
            const a = await api('POST', '/api/pairing/approve', { userCode: r.userCode, allowScreenControl: allow.checked });
            clear(result, h('p', { class: 'ok', 'data-approved': a.enrollmentId }, `Approved: the machine joins as ${a.enrollmentId}. It receives its credentials at its next poll.`));
          } else {
            const d = await api('POST', '/api/pairing/deny', { userCode: r.userCode });
            clear(result, h('p', { class: 'warn' }, d.denied ? 'Denied.' : 'Nothing to deny: the code is no longer pending.'));
          }
          for (const b of out.querySelectorAll('button.decide')) b.disabled = true;
        } catch (err) { clear(result, errorBox(err)); }
      };
      clear(out, h('dl', { class: 'facts' },
        h('dt', {}, 'Machine name'), h('dd', { id: 'device-machine-name' }, m.machineName ?? '(none given)'),
        h('dt', {}, 'OS / arch'), h('dd', { id: 'device-os' }, `${m.os} / ${m.arch}`),
        h('dt', {}, 'Workspace'), h('dd', {}, r.workspaceId),
        h('dt', {}, 'User code'), h('dd', {}, r.userCode),
        h('dt', {}, 'Requested permissions'), h('dd', { id: 'device-permissions' },
          h('ul', {}, h('li', {}, 'Whole machine: run commands, read and write files, open terminals'),
            m.canOfferDisplay ? h('li', {}, 'Can show its display') : null,
            h('li', {}, m.requestsScreenControl ? 'Asks for screen control (mouse and keyboard)' : 'Does not ask for screen control'))),
        h('dt', {}, 'Expires'), h('dd', {}, new Date(r.expiresAt).toLocaleString())),
      h('p', {}, h('label', {}, allow, ' Allow screen control (the owner must consent on the machine too)')),
      h('p', {}, h('button', { type: 'button', id: 'approve', class: 'decide primary', onclick: () => decide('approve') }, 'Approve'), ' ',
        h('button', { type: 'button', id: 'deny', class: 'decide', onclick: () => decide('deny') }, 'Deny')),
      result);
    } catch (err) {
      clear(out, errorBox(err.status === 404 ? 'No pending request with that code (codes work once and expire after 10 minutes).' : err));
    }
  };
  clear(main, h('h1', {}, 'Approve a device'),
    h('p', {}, 'Enter the code the machine printed (opengeni-agent enroll), check what it is, then approve or deny.'),
    h('form', { class: 'row', onsubmit: (e) => { e.preventDefault(); lookup(); } }, h('label', {}, 'User code ', code), h('button', { type: 'submit', id: 'lookup' }, 'Look up')),
    out);
  if (code.value) lookup();
}

function pairingPage() {
  const body = h('tbody', { id: 'enrollments' });
  const msg = h('div', { id: 'enrollments-msg' });
  const allow = h('input', { type: 'checkbox', id: 'token-screen-control' });
  const tokenOut = h('div', { id: 'token-out' });
  const load = async () => {
    try {
      const { enrollments } = await api('GET', '/api/enrollments');
      clear(body, enrollments.map((e) => {
        const btn = h('button', { type: 'button', class: 'revoke', disabled: e.status !== 'active', onclick: async () => {
          if (btn.dataset.confirm !== 'yes') { btn.dataset.confirm = 'yes'; btn.textContent = 'Really revoke?'; btn.classList.add('danger'); return; }
          try { await api('POST', `/api/enrollments/${encodeURIComponent(e.id)}/revoke`); await load(); } catch (err) { clear(msg, errorBox(err)); }
        } }, 'Revoke');
        return h('tr', { 'data-enrollment': e.id }, h('td', {}, h('a', { href: `/machines/${encodeURIComponent(e.id)}`, 'data-nav': true }, e.id)),
          h('td', { class: 'status' }, e.status), h('td', {}, `${e.os} / ${e.arch}`), h('td', {}, e.allowScreenControl ? 'yes' : 'no'),
          h('td', {}, ago(e.lastSeenAt)), h('td', {}, new Date(e.createdAt).toLocaleString()), h('td', {}, btn));
      }));
    } catch (err) { clear(msg, errorBox(err)); }
  };
  const mint = async () => {
    try {
      const t = await api('POST', '/api/enroll-tokens', { allowScreenControl: allow.checked });
      const cmd = h('textarea', { id: 'install-command', readonly: true, rows: 3, cols: 100 }, t.command);
      const copied = h('span', { class: 'muted' });
      clear(tokenOut, h('p', {}, `One-time enroll token, valid until ${new Date(t.expiresAt).toLocaleString()}. On the machine, run:`), cmd,
        h('p', {}, h('button', { type: 'button', id: 'copy-command', onclick: async () => {
          try { await navigator.clipboard.writeText(cmd.value); } catch { cmd.select(); document.execCommand('copy'); }
          clear(copied, ' copied');
        } }, 'Copy'), copied));
    } catch (err) { clear(tokenOut, errorBox(err)); }
  };
  clear(main, h('h1', {}, 'Pairing'),
    h('h2', {}, 'Pair a machine with a token'),
    h('p', {}, h('label', {}, allow, ' Allow screen control'), ' ', h('button', { type: 'button', id: 'mint', onclick: mint }, 'Mint enroll token')),
    tokenOut,
    h('h2', {}, 'Pair by code'), h('p', {}, 'A machine running opengeni-agent enroll prints a code: ', h('a', { href: '/device', 'data-nav': true }, 'approve it here'), '.'),
    h('h2', {}, 'Enrollments'), msg,
    h('table', { class: 'list' }, h('thead', {}, h('tr', {}, ['Machine', 'Status', 'OS / arch', 'Screen control', 'Last seen', 'Paired', ''].map((t) => h('th', {}, t)))), body));
  load();
}

route().catch((err) => clear(main, errorBox(err)));
