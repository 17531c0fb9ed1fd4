/*
 * Sundial operator UI.
 *
 * A small single-page app over the host's JSON API (docs/http-api.md): the dashboard (#/),
 * a job (#/jobs/<name>) and an execution (#/executions/<id>), kept current by the server-sent
 * event stream. No framework and no build step: `h()` builds the DOM and puts every string in
 * as a text node, so nothing a guest writes (logs, messages, keys) is ever parsed as HTML.
 */
'use strict';

(() => {
  // ---------------------------------------------------------------------------------------------
  // Settings

  const LOCALE = 'en-GB'; // one fixed locale: dates read "Mon 24 Nov, 09:10" for everyone
  const TOKEN_KEY = 'sundial-token';
  const TOAST_MS = 5000;
  const REFRESH_GAP_MS = 250; // at most four refreshes a second
  const RECONNECT_MAX_MS = 10000;
  const RELATIVE_TICK_MS = 15000;
  const PAGE_SIZE = 50;
  const ACTIVE = new Set(['queued', 'running']);

  // ---------------------------------------------------------------------------------------------
  // DOM helpers

  const $ = (selector) => document.querySelector(selector);
  const $$ = (selector) => Array.from(document.querySelectorAll(selector));

  /** Appends children (nodes, strings, nested arrays); null, undefined and false are skipped. */
  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false || child === '') continue;
      el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  /** Builds an element: `on<event>` attributes become listeners, strings become text nodes. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? '' : String(value));
    }
    return append(el, children);
  }

  /** Replaces the content of `el`. */
  function fill(el, ...children) {
    el.textContent = '';
    return append(el, children);
  }

  const link = (href, ...children) => h('a', { href }, ...children);
  const code = (text) => h('code', null, text);

  function button(label, attrs, onClick) {
    return h('button', { type: 'button', ...attrs, onclick: (event) => onClick(event.currentTarget) }, label);
  }

  /** A label and its control, tied by the control's id. */
  const field = (label, input) => h('div', { class: 'field' }, h('label', { for: input.id }, label), input);

  /** A <dl> from [term, value] pairs; falsy pairs are left out. */
  function definitionList(pairs) {
    return h('dl', { class: 'facts' }, pairs.filter(Boolean).map(([term, value]) => [h('dt', null, term), h('dd', null, value)]));
  }

  /** A table with a header row; `emptyText` fills the body when there are no rows. */
  function dataTable(attrs, headings, rows, emptyText) {
    const body = rows.length ? rows : h('tr', { class: 'empty-row' }, h('td', { colspan: headings.length }, emptyText));
    return h('div', { class: 'table-wrap' },
      h('table', { class: 'data', ...attrs },
        h('thead', null, h('tr', null, headings.map((text) => h('th', { scope: 'col' }, text)))),
        h('tbody', null, body)));
  }

  // ---------------------------------------------------------------------------------------------
  // Formatting

  const numberFormat = new Intl.NumberFormat(LOCALE);
  const DATE_STYLES = {
    full: { weekday: 'short', day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' },
    stamp: { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit', second: '2-digit' },
    day: { weekday: 'short', day: 'numeric', month: 'short' },
    time: { hour: '2-digit', minute: '2-digit' },
  };
  const dateFormats = new Map();

  const fmtNumber = (n) => (n === null || n === undefined ? '—' : numberFormat.format(n));

  /** "850 ms", "1.2 s", "3 min 4 s", "2 h 5 min". */
  function fmtDuration(ms) {
    if (ms === null || ms === undefined) return '—';
    if (ms < 1000) return `${Math.round(ms)} ms`;
    if (ms < 59950) return `${Number((ms / 1000).toFixed(1))} s`;
    const total = Math.round(ms / 1000);
    const hours = Math.floor(total / 3600);
    const minutes = Math.floor((total % 3600) / 60);
    const seconds = total % 60;
    const parts = hours ? [`${hours} h`, minutes && `${minutes} min`] : [`${minutes} min`, seconds && `${seconds} s`];
    return parts.filter(Boolean).join(' ');
  }

  const fmtSeconds = (secs) => (secs === null || secs === undefined ? '—' : fmtDuration(secs * 1000));

  /** "in 3 h", "12 min ago", "just now". */
  function fmtRelative(iso) {
    const secs = Math.round((Date.parse(iso) - Date.now()) / 1000);
    const abs = Math.abs(secs);
    if (abs < 5) return 'just now';
    const minutes = Math.round(abs / 60);
    const hours = Math.round(abs / 3600);
    let text = `${abs} s`;
    if (abs >= 60) text = minutes < 60 ? `${minutes} min` : hours < 48 ? `${hours} h` : `${Math.round(abs / 86400)} d`;
    return secs > 0 ? `in ${text}` : `${text} ago`;
  }

  /** An instant in one of DATE_STYLES, in `timeZone` (the viewer's when undefined). */
  function fmtDate(iso, style, timeZone) {
    const key = `${style}|${timeZone || ''}`;
    try {
      if (!dateFormats.has(key)) {
        dateFormats.set(key, new Intl.DateTimeFormat(LOCALE, { ...DATE_STYLES[style], timeZone }));
      }
      return dateFormats.get(key).format(new Date(iso));
    } catch {
      return iso; // a zone this browser does not know
    }
  }

  /** A relative time that the ticker keeps current. */
  const relTime = (iso) => h('time', { datetime: iso, class: 'relative', 'data-relative': true, title: iso }, fmtRelative(iso));

  /** An absolute time in the viewer's zone, to the second. */
  const stamp = (iso) => (iso ? h('time', { datetime: iso, title: iso }, fmtDate(iso, 'stamp')) : '—');

  /** "Mon 24 Nov, 09:10 (your time) · 00:10 UTC (job's zone)" and "in 3 h". */
  function bothZones(iso, zone) {
    const sameDay = fmtDate(iso, 'day') === fmtDate(iso, 'day', zone);
    return h('span', { class: 'when' },
      h('span', { class: 'when-local' }, `${fmtDate(iso, 'full')} (your time)`), ' · ',
      h('span', { class: 'when-zone' }, `${fmtDate(iso, sameDay ? 'time' : 'full', zone)} ${zone} (job's zone)`), ' ',
      relTime(iso));
  }

  /** "v2", or a dash before any component was loaded. */
  const versionText = (version) => (version === null || version === undefined ? '—' : `v${version}`);

  /** ok / skipped / failed / total. */
  const itemsText = (items) => (items ? [items.ok, items.skipped, items.failed, items.total].map(fmtNumber).join(' / ') : '—');

  function triggerText(execution) {
    const args = execution.args || {};
    return [execution.trigger, execution.attempt > 1 && `attempt ${execution.attempt}`, args.dry_run && 'dry run']
      .filter(Boolean).join(' · ');
  }

  // ---------------------------------------------------------------------------------------------
  // Token

  let token = sessionStorage.getItem(TOKEN_KEY) || '';

  function saveToken(value) {
    token = value;
    sessionStorage.setItem(TOKEN_KEY, value);
  }

  function safeDecode(text) {
    try {
      return decodeURIComponent(text);
    } catch {
      return text;
    }
  }

  /** Moves `token=...` from the fragment (`#token=abc`, `#/jobs/x&token=abc`) into storage. */
  function takeTokenFromHash() {
    const hash = location.hash.slice(1);
    const match = /(^|[&?])token=([^&]*)/.exec(hash);
    if (!match) return;
    saveToken(safeDecode(match[2]));
    const rest = (hash.slice(0, match.index) + hash.slice(match.index + match[0].length)).replace(/^[&?]+|[&?]+$/g, '');
    history.replaceState(null, '', location.pathname + location.search + (rest ? `#${rest}` : ''));
  }

  function showTokenBanner() {
    const banner = $('#token-banner');
    if (!banner.hidden) return;
    banner.hidden = false;
    $('#token-input').focus();
  }

  function onTokenSubmit(event) {
    event.preventDefault();
    const input = $('#token-input');
    if (!input.value.trim()) return;
    saveToken(input.value.trim());
    input.value = '';
    $('#token-banner').hidden = true;
    toast('success', 'Token saved');
    connectEvents();
    showRoute();
  }

  // ---------------------------------------------------------------------------------------------
  // API

  const STATUS_TEXT = { 0: 'The host cannot be reached', 401: 'This needs the API token' };

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error) || STATUS_TEXT[status] || `Request failed (HTTP ${status})`);
      this.status = status;
      this.body = body || {};
    }
  }

  const authHeaders = (headers) => (token ? { ...headers, Authorization: `Bearer ${token}` } : headers);
  const jobPath = (name) => `/api/scheduler/jobs/${encodeURIComponent(name)}`;
  const jobHref = (name) => `#/jobs/${encodeURIComponent(name)}`;
  const executionHref = (id) => `#/executions/${id}`;

  /**
   * The URL of an API path such as `/api/scheduler/jobs`, relative to the page, so the UI
   * works wherever it is mounted (at `/`, or under an application's prefix such as `/sundial/`).
   */
  const apiUrl = (path) => new URL(path.replace(/^\//, ''), document.baseURI);

  /** One JSON request; resolves to the reply body, rejects with an ApiError. */
  async function api(method, path, body) {
    const init = { method, cache: 'no-store', headers: authHeaders({ Accept: 'application/json' }) };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(apiUrl(path), init);
    } catch {
      throw new ApiError(0, null);
    }
    const data = await response.json().catch(() => null);
    if (response.status === 401) showTokenBanner();
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  // ---------------------------------------------------------------------------------------------
  // Feedback: toasts and busy buttons

  /** Shows a success or error message for TOAST_MS; it can be closed earlier. */
  function toast(kind, ...content) {
    const el = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' },
      h('span', { class: 'toast-message' }, content));
    const dismiss = () => el.remove();
    el.appendChild(button('', { class: 'toast-close', 'aria-label': 'Dismiss', title: 'Dismiss' }, dismiss));
    setTimeout(dismiss, TOAST_MS);
    $('#toasts').appendChild(el);
  }

  let pendingActions = 0;

  /** Runs a request for a button: busy while in flight, an error toast on failure, then a refresh. */
  async function runAction(btn, action) {
    if (btn.disabled) return;
    const label = btn.textContent;
    btn.disabled = true;
    btn.setAttribute('aria-busy', 'true');
    fill(btn, h('span', { class: 'spinner', 'aria-hidden': 'true' }), `${label}…`);
    pendingActions += 1;
    try {
      await action();
    } catch (err) {
      toast('error', err.message);
    } finally {
      pendingActions -= 1;
      btn.disabled = false;
      btn.removeAttribute('aria-busy');
      btn.textContent = label;
      requestRefresh();
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Actions

  function runJob(btn, name, options) {
    return runAction(btn, async () => {
      try {
        const reply = await api('POST', `${jobPath(name)}/run`, options || {});
        toast('success', 'Started execution ', link(executionHref(reply.execution_id), `#${reply.execution_id}`));
      } catch (err) {
        if (err.status !== 409) throw err;
        const active = err.body.active_execution_id;
        toast('error', `${name} is already running`,
          active ? [': ', link(executionHref(active), `execution #${active}`)] : ` (${err.message})`);
      }
    });
  }

  function toggleJob(btn, job) {
    const enabled = !job.enabled;
    return runAction(btn, async () => {
      await api('PUT', `${jobPath(job.name)}/enabled`, { enabled });
      toast('success', `Job ${job.name} ${enabled ? 'enabled' : 'disabled'}`);
    });
  }

  function toggleScheduler(btn, enabled) {
    return runAction(btn, async () => {
      await api('PUT', '/api/scheduler/enabled', { enabled });
      toast('success', enabled ? 'Scheduler enabled' : 'Scheduler disabled');
    });
  }

  function cancelExecution(btn, id) {
    return runAction(btn, async () => {
      await api('POST', `/api/scheduler/executions/${id}/cancel`);
      toast('success', `Cancelling execution #${id}`);
    });
  }

  const jobActions = (job) => h('div', { class: 'actions' },
    button('Run now', { class: 'job-run' }, (btn) => runJob(btn, job.name)),
    button(job.enabled ? 'Disable' : 'Enable', { class: 'job-toggle secondary' }, (btn) => toggleJob(btn, job)));

  const cancelButton = (id) => button('Cancel', { class: 'execution-cancel danger' }, (btn) => cancelExecution(btn, id));

  // ---------------------------------------------------------------------------------------------
  // Status badges and progress bars

  const statusBadge = (status, extraClass) =>
    h('span', { class: ['status', `status-${status || 'none'}`, extraClass].filter(Boolean).join(' ') }, status || 'never run');

  /** What a progress bar shows for an execution summary. */
  function progressState(execution) {
    if (execution.status === 'queued') return { phase: 'queued', done: 0, total: null };
    if (execution.status === 'running') {
      const progress = execution.progress || { done: execution.items ? execution.items.total : 0, total: null };
      return { phase: 'running', done: progress.done, total: progress.total };
    }
    return { phase: 'finished', done: execution.items.total, total: execution.items.total, items: execution.items };
  }

  function progressLabel(state) {
    if (state.phase === 'queued') return 'queued';
    if (state.phase === 'running') {
      const known = state.total !== null && state.total !== undefined;
      return known ? `${fmtNumber(state.done)} / ${fmtNumber(state.total)} items` : `${fmtNumber(state.done)} items`;
    }
    const { total, ok, skipped, failed } = state.items;
    if (!total) return 'no items';
    return `${fmtNumber(total)} items: ${fmtNumber(ok)} ok, ${fmtNumber(skipped)} skipped, ${fmtNumber(failed)} failed`;
  }

  /** Updates a bar in place, so a running one moves rather than being redrawn. */
  function setProgress(bar, state) {
    const fillEl = bar.querySelector('.progress-fill');
    const known = state.total !== null && state.total !== undefined;
    let percent = 0;
    if (state.phase === 'finished' || (state.phase === 'running' && !known)) percent = 100;
    else if (known) percent = state.total > 0 ? Math.min(100, (state.done / state.total) * 100) : 100;
    bar.dataset.phase = state.phase;
    bar.classList.toggle('progress-indeterminate', state.phase === 'running' && !known);
    fillEl.style.width = `${percent}%`;
    fillEl.setAttribute('aria-valuenow', String(state.done));
    fillEl.setAttribute('aria-valuemax', known ? String(state.total) : '');
    bar.querySelector('.progress-label').textContent = progressLabel(state);
  }

  function progressBar(execution) {
    const bar = h('div', { class: 'progress', 'data-execution': execution.id, 'data-status': execution.status },
      h('div', { class: 'progress-track' },
        h('div', { class: 'progress-fill', role: 'progressbar', 'aria-valuemin': '0', 'aria-label': `Execution #${execution.id}` })),
      h('span', { class: 'progress-label' }));
    setProgress(bar, progressState(execution));
    return bar;
  }

  /** An `execution_progress` event: moves every bar and item count of that execution. */
  function applyProgress(event) {
    const id = Number(event.id);
    const state = { phase: 'running', done: event.done, total: event.total };
    for (const bar of $$(`.progress[data-execution="${id}"]`)) {
      if (bar.dataset.phase !== 'finished') setProgress(bar, state);
    }
    const items = { ok: event.ok, skipped: event.skipped, failed: event.failed, total: event.done };
    for (const el of $$(`[data-items-of="${id}"]`)) el.textContent = itemsText(items);
  }

  // ---------------------------------------------------------------------------------------------
  // Executions table (job page)

  const EXECUTION_HEADINGS = ['Execution', 'Trigger', 'Scheduled for', 'Started', 'Duration', 'Status',
    'Items ok / skipped / failed / total', 'Progress', ''];

  const executionRow = (e) => h('tr', { 'data-execution': e.id },
    h('td', null, link(executionHref(e.id), `#${e.id}`)),
    h('td', null, triggerText(e)),
    h('td', null, stamp(e.scheduled_for)),
    h('td', null, stamp(e.started_at)),
    h('td', { class: 'num' }, fmtDuration(e.duration_ms)),
    h('td', { class: 'execution-status' }, statusBadge(e.status)),
    h('td', { class: 'execution-items num', 'data-items-of': e.id }, itemsText(e.items)),
    h('td', { class: 'execution-progress' }, progressBar(e)),
    h('td', null, ACTIVE.has(e.status) && cancelButton(e.id)));

  const executionsTable = (executions) =>
    dataTable({ id: 'executions-table' }, EXECUTION_HEADINGS, executions.map(executionRow), 'No executions yet');

  // ---------------------------------------------------------------------------------------------
  // Dashboard (#/)

  function schedulerPanel(status, zones) {
    const { enabled } = status;
    return h('section', { class: 'panel', id: 'scheduler-panel' },
      h('div', { class: 'panel-head' },
        h('h2', { id: 'scheduler-state', class: enabled ? 'state-on' : 'state-off' },
          enabled ? 'Scheduler enabled' : 'Scheduler disabled'),
        button(enabled ? 'Disable scheduler' : 'Enable scheduler', { id: 'scheduler-toggle', class: 'secondary' },
          (btn) => toggleScheduler(btn, !enabled))),
      h('p', { class: 'meta' }, `Sundial ${status.version} · node `, code(status.node), ` · ${fmtNumber(status.jobs)} jobs`),
      !status.scheduling && h('p', { class: 'notice' }, 'This host does not run the scheduler: jobs run only when started.'),
      status.hosts && status.hosts.length > 1 && h('p', { class: 'meta', id: 'hosts' },
        `${fmtNumber(status.hosts.length)} hosts on this ${status.backend} database: `,
        joined(status.hosts.map((x) => code(x.this ? `${x.node} (this host)` : x.node)), ', ')),
      status.slots && h('p', { class: 'meta', id: 'slots' },
        `Slots: ${fmtNumber(status.slots.running)} of ${fmtNumber(status.slots.limit)} in use`,
        status.slots.waiting > 0 && ` · ${fmtNumber(status.slots.waiting)} waiting`),
      h('div', { class: 'columns' }, runningList(status.running), nextFires(status.next_fires, zones)));
  }

  function runningList(running) {
    const items = running.map((e) => h('li', null,
      h('div', { class: 'running-head' },
        link(executionHref(e.id), `#${e.id}`), ' ', link(jobHref(e.job), e.job), ' ',
        statusBadge(e.status, 'execution-status'), ' ', e.started_at && relTime(e.started_at), ' ', cancelButton(e.id)),
      progressBar(e)));
    return h('div', { id: 'running' }, h('h3', null, 'Running now'),
      items.length ? h('ul', { class: 'plain-list' }, items) : h('p', { class: 'empty' }, 'Nothing is running.'));
  }

  function nextFires(fires, zones) {
    const items = fires.map((fire) => h('li', null, link(jobHref(fire.job), fire.job), ' ', bothZones(fire.at, zones.get(fire.job) || 'UTC')));
    return h('div', { id: 'next-fires' }, h('h3', null, 'Next fires'),
      items.length ? h('ul', { class: 'plain-list' }, items) : h('p', { class: 'empty' }, 'Nothing is scheduled.'));
  }

  const loadErrorNote = (message) =>
    h('div', { class: 'load-error', role: 'note' }, h('span', { class: 'badge-warning' }, 'load error'), ' ', message);

  const scheduleWords = (job) => [h('div', null, job.schedule_text || job.schedule), code(job.schedule)];

  function lastRun(job) {
    if (!job.last_status) return h('span', { class: 'muted' }, 'never');
    return [link(executionHref(job.last_execution_id), statusBadge(job.last_status)), ' ', job.last_run_at && relTime(job.last_run_at)];
  }

  const jobRow = (job) => h('tr', { 'data-job': job.name, class: job.enabled ? null : 'is-disabled' },
    h('td', { class: 'job-name' }, link(jobHref(job.name), job.name), job.load_error && loadErrorNote(job.load_error)),
    h('td', { class: 'job-description' }, job.description || ''),
    h('td', { class: 'job-schedule' }, scheduleWords(job)),
    h('td', { class: 'job-timezone' }, job.timezone),
    h('td', { class: 'job-next-run' }, job.next_run_at ? bothZones(job.next_run_at, job.timezone) : '—',
      job.missed_fires > 0 && h('div', { class: 'warning-text' }, `${fmtNumber(job.missed_fires)} missed fires`)),
    h('td', { class: 'job-last-status' }, lastRun(job)),
    h('td', { class: 'job-version' }, versionText(job.version)),
    h('td', { class: `job-enabled ${job.enabled ? 'is-on' : 'is-off'}` }, job.enabled ? 'enabled' : 'disabled'),
    h('td', { class: 'job-actions' }, jobActions(job)));

  const JOB_HEADINGS = ['Job', 'Description', 'Schedule', 'Zone', 'Next run', 'Last run', 'Version', 'State', 'Actions'];

  const dashboardView = {
    title: () => 'Dashboard',
    async load() {
      const [status, list] = await Promise.all([api('GET', '/api/scheduler/status'), api('GET', '/api/scheduler/jobs')]);
      return { status, jobs: list.jobs };
    },
    render({ status, jobs }) {
      const zones = new Map(jobs.map((job) => [job.name, job.timezone]));
      return h('div', { class: 'dashboard' },
        schedulerPanel(status, zones),
        h('section', { class: 'panel' }, h('h2', null, 'Jobs'),
          dataTable({ id: 'jobs-table' }, JOB_HEADINGS, jobs.map(jobRow), 'No jobs are loaded.')));
    },
  };

  // ---------------------------------------------------------------------------------------------
  // Job page (#/jobs/<name>). Built once per visit; a refresh refills its parts and leaves the
  // forms (and whatever the operator is typing in them) alone.

  function jobHeader(job) {
    return [
      h('div', null,
        h('p', { class: 'crumbs' }, link('#/', 'Dashboard'), ' / job'),
        h('h1', null, job.name, ' ', h('span', { class: `job-enabled pill ${job.enabled ? 'is-on' : 'is-off'}` },
          job.enabled ? 'enabled' : 'disabled')),
        job.description && h('p', { class: 'description' }, job.description),
        h('p', { class: 'meta' }, `${job.kind} job · ${versionText(job.version)} `, job.digest && code(job.digest),
          job.running > 0 && ` · ${fmtNumber(job.running)} running`)),
      jobActions(job),
    ];
  }

  function scheduleInfo(job, state) {
    const fromApi = job.schedule_source === 'api';
    return [
      definitionList([
        ['In words', job.schedule_text || '—'],
        ['Expression', code(job.schedule)],
        ['Time zone', job.item_zones ? itemZonesText(job.item_zones) : job.timezone],
        ['Source', fromApi ? 'set through the API (overrides the configuration)' : job.schedule_source],
        fromApi && job.configured_schedule && ['Configured',
          [code(job.configured_schedule.schedule), ` in ${job.configured_schedule.timezone}`]],
        job.missed_fires > 0 && ['Missed fires', fmtNumber(job.missed_fires)],
      ]),
      h('h3', null, 'Upcoming'),
      job.upcoming_groups && job.upcoming_groups.length
        ? h('ul', { class: 'plain-list', id: 'upcoming-groups' }, job.upcoming_groups.map((g) =>
          h('li', null, h('span', { class: 'when-local' }, `${fmtDate(g.at, 'full')} (your time)`), ' · ',
            g.zones.join(', '), ' ', relTime(g.at))))
        : (job.upcoming || []).length
        ? h('ul', { class: 'plain-list' }, job.upcoming.map((at) => h('li', null, bothZones(at, job.timezone))))
        : h('p', { class: 'empty' }, job.enabled ? 'It never fires.' : 'Disabled: nothing upcoming.'),
      fromApi && button('Reset to configured', { id: 'schedule-reset', class: 'secondary' }, (btn) => resetSchedule(btn, state)),
    ];
  }

  function itemZonesText(z) {
    if (z.source === 'all') return "each item's own (every zone)";
    if (z.source === 'list') return `each item's own: ${z.slots.join(', ')}`;
    return ["each item's own, read by ", code(z.query)];
  }

  function resetSchedule(btn, state) {
    return runAction(btn, async () => {
      const job = await api('DELETE', `${jobPath(state.detail.name)}/schedule`);
      state.scheduleInputs.expression.value = job.schedule;
      state.scheduleInputs.timezone.value = job.timezone;
      toast('success', `Schedule of ${job.name} reset to the configured one`);
    });
  }

  /** Every zone the browser knows, as suggestions for the zone input. */
  function zoneList() {
    const zones = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [];
    return h('datalist', { id: 'timezones' }, zones.map((zone) => h('option', { value: zone })));
  }

  function scheduleForm(job, state) {
    const expression = h('input', { id: 'schedule-expression', value: job.schedule, required: true, spellcheck: 'false', autocomplete: 'off' });
    const timezone = h('input', { id: 'schedule-timezone', value: job.timezone, list: 'timezones', spellcheck: 'false', autocomplete: 'off' });
    const error = h('p', { id: 'schedule-error', class: 'form-error', role: 'alert', hidden: true });
    const submit = h('button', { type: 'submit' }, 'Save schedule');
    state.scheduleInputs = { expression, timezone };
    const onSubmit = (event) => {
      event.preventDefault();
      runAction(submit, async () => {
        error.hidden = true;
        const body = { schedule: expression.value.trim() };
        if (timezone.value.trim()) body.timezone = timezone.value.trim();
        try {
          const reply = await api('PUT', `${jobPath(state.detail.name)}/schedule`, body);
          toast('success', `Schedule of ${reply.name} saved`);
        } catch (err) {
          fill(error, err.message);
          error.hidden = false;
          throw err;
        }
      });
    };
    return h('form', { id: 'schedule-form', class: 'inline-form', onsubmit: onSubmit },
      field('Cron expression', expression), field('Time zone', timezone), submit, error, zoneList());
  }

  function runForm(state) {
    const date = h('input', { id: 'run-date', type: 'date' });
    const limit = h('input', { id: 'run-limit', type: 'number', min: '1', step: '1', inputmode: 'numeric' });
    const dryRun = h('input', { id: 'run-dry-run', type: 'checkbox' });
    const submit = h('button', { type: 'submit', class: 'job-run-options' }, 'Run with options');
    const onSubmit = (event) => {
      event.preventDefault();
      const options = { dry_run: dryRun.checked };
      if (date.value) options.date = date.value;
      if (limit.value) options.limit = Number(limit.value);
      runJob(submit, state.detail.name, options);
    };
    return h('form', { id: 'run-form', class: 'inline-form', onsubmit: onSubmit },
      field('Date', date), field('Item limit', limit),
      h('div', { class: 'field check' }, dryRun, h('label', { for: 'run-dry-run' }, 'Dry run')), submit);
  }

  /** Nodes with a separator between them. */
  const joined = (nodes, separator) => nodes.flatMap((node, i) => (i ? [separator, node] : [node]));

  function grantsInfo(job) {
    if (!job.grants) return h('p', { class: 'empty' }, 'The job is not loaded on this host, so its configuration is unknown.');
    const { grants, limits, policies } = job;
    const hosts = grants.http || [];
    const mismatches = job.grant_mismatches || [];
    return [
      definitionList([
        ['Database', grants.database || 'none'],
        ['HTTP hosts', hosts.length ? joined(hosts.map(code), ', ') : 'none'],
        ['Key-value state', grants.state ? 'granted' : 'none'],
        ['Requested', (job.requested || []).join(', ') || 'nothing'],
      ]),
      mismatches.length > 0 && h('ul', { class: 'grant-mismatches' }, mismatches.map((text) => h('li', null, text))),
      h('h3', null, 'Limits'),
      definitionList([
        ['Timeout', fmtSeconds(limits.timeout_secs)],
        ['Memory', `${fmtNumber(limits.memory_mib)} MiB`],
        ['Fuel budget', limits.fuel ? fmtNumber(limits.fuel) : 'unlimited'],
      ]),
      h('h3', null, 'Policies'),
      definitionList([
        ['Overlap', policies.overlap],
        ['Misfire', policies.misfire],
        ['Max attempts', fmtNumber(policies.max_attempts)],
        ['Retry backoff', fmtSeconds(policies.retry_backoff_secs)],
        ['Expected duration', fmtSeconds(policies.expected_duration_secs)],
        ['Retry on crash', policies.retry_on_crash ? 'yes' : 'no'],
      ]),
    ];
  }

  /** The versions; the kept ones with other code than the live one can be rolled back to. */
  const versionsTable = (job, state) => dataTable({ id: 'versions-table' }, ['Version', 'Digest', 'First seen', 'Executions', ''],
    (job.versions || []).map((v) => h('tr', { class: v.version === job.version ? 'is-current' : null, 'data-version': v.version },
      h('td', null, `v${v.version}`, v.version === job.version && ' (current)'),
      h('td', null, code(v.digest)),
      h('td', null, stamp(v.first_seen)),
      h('td', { class: 'num' }, fmtNumber(v.executions)),
      h('td', null, v.kept && v.digest !== job.digest
        && button('Roll back', { class: 'secondary version-rollback', title: `Put the code of v${v.version} live again` },
          (btn) => rollbackTo(btn, state, v.version))))),
    'No versions recorded.');

  function rollbackTo(btn, state, version) {
    return runAction(btn, async () => {
      const reply = await api('POST', `${jobPath(state.detail.name)}/rollback`, { to: version });
      toast('success', `${reply.job}: the code of v${reply.to_version} is live again as v${reply.version}`);
    });
  }

  /** Puts the newest page on top of what is shown, keeping older pages the operator loaded. */
  function mergeNewestPage(state, page) {
    const rows = page.executions;
    const oldest = rows.length ? rows[rows.length - 1].id : null;
    const older = oldest === null ? [] : (state.executions || []).filter((e) => e.id < oldest);
    state.executions = rows.concat(older);
    state.cursor = older.length ? state.cursor : page.next_cursor;
  }

  function renderExecutions(state) {
    fill(state.parts.executions, executionsTable(state.executions),
      state.cursor && button('Load older', { id: 'load-older', class: 'secondary' }, (btn) => loadOlder(btn, state)));
  }

  function loadOlder(btn, state) {
    return runAction(btn, async () => {
      const query = `limit=${PAGE_SIZE}&before=${encodeURIComponent(state.cursor)}`;
      const page = await api('GET', `${jobPath(state.detail.name)}/executions?${query}`);
      state.executions = state.executions.concat(page.executions);
      state.cursor = page.next_cursor;
      renderExecutions(state);
    });
  }

  function jobLayout(job, state) {
    const parts = {};
    for (const name of ['header', 'loadError', 'schedule', 'grants', 'versions', 'executions']) parts[name] = h('div');
    parts.header.className = 'page-head';
    const panel = (title, ...content) => h('section', { class: 'panel' }, h('h2', null, title), content);
    parts.root = h('div', { class: 'job-view' },
      parts.header, parts.loadError,
      h('div', { class: 'columns' },
        panel('Schedule', parts.schedule, h('h3', null, 'Change the schedule'), scheduleForm(job, state)),
        panel('Run with options', h('p', { class: 'hint' }, 'Date: the day an item job works on. Limit: at most this many items.'),
          runForm(state))),
      panel('Grants, limits and policies', parts.grants),
      panel('Versions', parts.versions),
      panel('Executions', parts.executions));
    return parts;
  }

  const jobView = {
    title: (route) => route.name,
    async load(route) {
      const [detail, page] = await Promise.all([
        api('GET', jobPath(route.name)),
        api('GET', `${jobPath(route.name)}/executions?limit=${PAGE_SIZE}`),
      ]);
      return { detail, page };
    },
    render({ detail, page }, state) {
      const first = !state.parts;
      state.detail = detail;
      if (first) state.parts = jobLayout(detail, state);
      const { parts } = state;
      fill(parts.header, jobHeader(detail));
      fill(parts.loadError, detail.load_error && h('div', { class: 'notice-error' },
        h('strong', null, 'The latest file was rejected: '), detail.load_error));
      fill(parts.schedule, scheduleInfo(detail, state));
      fill(parts.grants, grantsInfo(detail));
      fill(parts.versions, versionsTable(detail, state));
      mergeNewestPage(state, page);
      renderExecutions(state);
      return first ? parts.root : null;
    },
  };

  // ---------------------------------------------------------------------------------------------
  // Execution page (#/executions/<id>)

  const executionFields = (e) => [
    ['Job', link(jobHref(e.job), e.job)],
    ['Trigger', triggerText(e)],
    ['Attempt', String(e.attempt)],
    e.parent_id !== null && e.parent_id !== undefined && ['Retry of', link(executionHref(e.parent_id), `#${e.parent_id}`)],
    ['Scheduled for', stamp(e.scheduled_for)],
    ['Started', e.started_at ? [stamp(e.started_at), ' ', relTime(e.started_at)] : '—'],
    ['Finished', stamp(e.finished_at)],
    ['Duration', fmtDuration(e.duration_ms)],
    ['Items ok / skipped / failed / total', h('span', { 'data-items-of': e.id }, itemsText(e.items))],
    ['Changed', fmtNumber(e.changed)],
    ['Version', [`${versionText(e.version)} `, e.digest && code(e.digest)]],
    ['Node', e.node ? code(e.node) : '—'],
    ['Fuel used', e.fuel_consumed === null || e.fuel_consumed === undefined ? '—' : fmtNumber(e.fuel_consumed)],
    e.overrun && ['Overrun', h('span', { class: 'warning-text' }, 'ran longer than expected')],
  ];

  const problemsTable = (problems) => dataTable({ id: 'problems-table' }, ['Key', 'Outcome', 'Class', 'Message'],
    problems.map((p) => h('tr', null,
      h('td', null, code(p.key)), h('td', null, statusBadge(p.outcome)), h('td', null, p.class), h('td', null, p.message))),
    'No problems recorded.');

  function executionPage(e) {
    const panel = (title, ...content) => h('section', { class: 'panel' }, h('h2', null, title), content);
    const problems = e.problems || [];
    return h('div', { class: 'execution-view' },
      h('div', { class: 'page-head' },
        h('div', null,
          h('p', { class: 'crumbs' }, link('#/', 'Dashboard'), ' / ',
            h('a', { href: jobHref(e.job), id: 'back-to-job' }, e.job), ' / execution'),
          h('h1', null, `Execution #${e.id} `, statusBadge(e.status, 'execution-status'))),
        ACTIVE.has(e.status) && h('div', { class: 'actions' }, cancelButton(e.id))),
      h('section', { class: 'panel' }, progressBar(e), definitionList(executionFields(e))),
      (e.error_class || e.error_message) && h('section', { class: 'panel execution-error' }, h('h2', null, 'Error'),
        h('p', null, e.error_class && h('span', { class: 'badge-error' }, e.error_class), ' ', e.error_message)),
      e.summary && panel('Summary', h('pre', { class: 'summary' }, e.summary)),
      panel('Arguments', h('pre', null, JSON.stringify(e.args, null, 2))),
      panel('Logs',
        e.logs_truncated && h('p', { class: 'notice logs-truncated' }, 'The logs were truncated: not all output was kept.'),
        h('pre', { id: 'execution-logs', class: 'logs' }, e.logs || '')),
      panel(`Problems (${fmtNumber(problems.length)})`, problemsTable(problems)));
  }

  const executionView = {
    title: (route) => `Execution #${route.id}`,
    load: (route) => api('GET', `/api/scheduler/executions/${route.id}`),
    render: (execution) => executionPage(execution),
  };

  const missingView = {
    title: () => 'Not found',
    load: async () => null,
    render: () => errorState(new Error('There is no such page.')),
  };

  // ---------------------------------------------------------------------------------------------
  // Routing and view life cycle

  const VIEWS = { dashboard: dashboardView, job: jobView, execution: executionView, missing: missingView };
  const current = { route: null, generation: 0, state: {} };

  /** `#/`, `#/jobs/<name>`, `#/executions/<id>`; anything after `?` or `&` is not route. */
  function parseRoute(hash) {
    const path = hash.replace(/^#/, '').split(/[?&]/)[0];
    if (path === '' || path === '/') return { view: 'dashboard' };
    const job = /^\/jobs\/(.+)$/.exec(path);
    if (job) return { view: 'job', name: safeDecode(job[1]) };
    const execution = /^\/executions\/(\d+)$/.exec(path);
    if (execution) return { view: 'execution', id: Number(execution[1]) };
    return { view: 'missing' };
  }

  function errorState(err) {
    return h('div', { class: 'empty error-state', role: 'alert' },
      h('p', null, err.message), h('p', null, link('#/', 'Back to the dashboard')));
  }

  const mount = (node) => fill($('#view'), node);

  /** Shows the view for the current fragment: a placeholder, then its data. */
  function showRoute() {
    takeTokenFromHash();
    current.route = parseRoute(location.hash);
    current.generation += 1;
    current.state = {};
    document.title = `${VIEWS[current.route.view].title(current.route)} · Sundial`;
    mount(h('p', { class: 'loading' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), 'Loading…'));
    window.scrollTo(0, 0);
    loadView(true);
  }

  /** Loads and renders the current view; a failed refresh keeps what is shown. */
  async function loadView(first) {
    const { route, generation, state } = current;
    const view = VIEWS[route.view];
    try {
      const data = await view.load(route, state);
      if (generation !== current.generation) return;
      const node = view.render(data, state);
      if (node) mount(node);
    } catch (err) {
      if (generation !== current.generation || !(first || err.status === 404)) return;
      current.state = {};
      mount(errorState(err));
    }
  }

  // Refreshes are coalesced: at most one every REFRESH_GAP_MS, none while a button's request is in
  // flight (its end asks for one), and one more if events arrived during a refresh.
  let refreshTimer = null;
  let lastRefresh = 0;
  let refreshing = false;
  let refreshAgain = false;

  function requestRefresh() {
    if (refreshTimer !== null) return;
    refreshTimer = setTimeout(runRefresh, Math.max(0, lastRefresh + REFRESH_GAP_MS - Date.now()));
  }

  async function runRefresh() {
    refreshTimer = null;
    if (pendingActions > 0) return;
    if (refreshing) {
      refreshAgain = true;
      return;
    }
    refreshing = true;
    lastRefresh = Date.now();
    try {
      await loadView(false);
    } finally {
      refreshing = false;
      if (refreshAgain) {
        refreshAgain = false;
        requestRefresh();
      }
    }
  }

  /** Whether an event concerns what the current view shows. */
  function concernsView(data) {
    const { route, state } = current;
    if (route.view === 'dashboard') return true;
    if (route.view === 'job') return data.job === (state.detail ? state.detail.name : route.name);
    if (route.view === 'execution') return Number(data.id) === route.id;
    return false;
  }

  // ---------------------------------------------------------------------------------------------
  // Live updates: server-sent events read with fetch(), which (unlike EventSource) sends the token

  const live = { controller: null, timer: null, attempt: 0, connectedBefore: false };

  function setLive(on) {
    const indicator = $('#live-indicator');
    indicator.textContent = on ? 'live' : 'reconnecting…';
    indicator.classList.toggle('is-live', on);
    indicator.classList.toggle('is-down', !on);
  }

  function handleServerEvent(name, text) {
    let data = {};
    try {
      data = text ? JSON.parse(text) : {};
    } catch {
      return; // not ours to understand
    }
    if (name === 'execution_progress') applyProgress(data);
    else if (name === 'lagged') requestRefresh();
    else if (['execution_started', 'execution_finished', 'job_changed', 'scheduler_changed'].includes(name)) {
      if (concernsView(data)) requestRefresh();
    }
  }

  /** A line-by-line SSE parser: `event:` and `data:` fields, a blank line ends an event. */
  function sseParser(onEvent) {
    let buffer = '';
    let name = '';
    let data = [];
    const line = (text) => {
      if (text === '') {
        if (name || data.length) onEvent(name || 'message', data.join('\n'));
        name = '';
        data = [];
        return;
      }
      if (text.startsWith(':')) return; // a comment (keep-alive)
      const colon = text.indexOf(':');
      const key = colon < 0 ? text : text.slice(0, colon);
      const value = colon < 0 ? '' : text.slice(colon + 1).replace(/^ /, '');
      if (key === 'event') name = value;
      else if (key === 'data') data.push(value);
    };
    return (chunk) => {
      buffer += chunk;
      const lines = buffer.split('\n');
      buffer = lines.pop();
      for (const text of lines) line(text.endsWith('\r') ? text.slice(0, -1) : text);
    };
  }

  async function readEvents(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    const parse = sseParser(handleServerEvent);
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      parse(decoder.decode(value, { stream: true }));
    }
  }

  function onConnected() {
    if (live.connectedBefore || live.attempt > 0) requestRefresh(); // events may have been missed
    live.connectedBefore = true;
    live.attempt = 0;
    setLive(true);
  }

  /** Opens the event stream, replacing any open one; reconnects with backoff when it ends. */
  async function connectEvents() {
    clearTimeout(live.timer);
    if (live.controller) live.controller.abort();
    const controller = new AbortController();
    live.controller = controller;
    try {
      const response = await fetch(apiUrl('/api/scheduler/events'), {
        headers: authHeaders({ Accept: 'text/event-stream' }), cache: 'no-store', signal: controller.signal,
      });
      if (response.status === 401) {
        setLive(false);
        showTokenBanner(); // saving a token reconnects
        return;
      }
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      onConnected();
      await readEvents(response.body);
    } catch {
      // the stream failed or was replaced: reconnect below unless replaced
    }
    if (controller.signal.aborted) return;
    setLive(false);
    const delay = Math.min(RECONNECT_MAX_MS, 1000 * 2 ** live.attempt);
    live.attempt += 1;
    live.timer = setTimeout(connectEvents, delay);
  }

  // ---------------------------------------------------------------------------------------------
  // Start

  function tickRelativeTimes() {
    for (const el of $$('time[data-relative]')) el.textContent = fmtRelative(el.dateTime);
  }

  function start() {
    $('#token-form').addEventListener('submit', onTokenSubmit);
    window.addEventListener('hashchange', showRoute);
    setInterval(tickRelativeTimes, RELATIVE_TICK_MS);
    showRoute();
    connectEvents();
  }

  start();
})();
