/* exfleet dashboard: the collector's read-only view of the fleet.
 *
 * Plain script, no framework, no build step; served by the collector with
 * "Content-Security-Policy: default-src 'self'", so nothing inline: no
 * inline handlers, no style attributes in markup (CSSOM from here is
 * allowed). Every value from the API reaches the page through textContent
 * or a data-* attribute, never as markup.
 *
 * Routes (the hash, so the back button works):
 *   #/?status=&connectivity=&wave=&q=   the fleet, with the host filters
 *   #/host/ID                           one host
 * Data is fetched again every REFRESH_MS without reloading the page. */
'use strict';

(function () {
	const REFRESH_MS = 10000;
	const FETCH_TIMEOUT_MS = 8000;
	const PAGE = 500;            /* the API's largest page */
	const MAX_HOST_PAGES = 20;   /* 10 000 hosts at most in the table's data */
	const MAX_ROWS = 500;        /* rows drawn at once; "show more" adds more */

	/* Worst first: the order of the tiles and the severity sort. */
	const STATUSES = ['AFFECTED', 'NEEDS_SP_REINSTALL', 'DEGRADED', 'AT_RISK', 'REPAIRING',
		'REPAIRED', 'HEALTHY'];
	/* Left to right in a wave's bar: done first, hosts without a status last. */
	const BAR_ORDER = ['HEALTHY', 'REPAIRED', 'REPAIRING', 'DEGRADED', 'AT_RISK',
		'NEEDS_SP_REINSTALL', 'AFFECTED', 'NEVER_SEEN'];
	const CONNECTIVITY = ['ONLINE', 'OFFLINE', 'NEVER_SEEN'];
	const LABEL = {
		AFFECTED: 'Affected',
		NEEDS_SP_REINSTALL: 'Needs SP reinstall',
		DEGRADED: 'Degraded',
		AT_RISK: 'At risk',
		REPAIRING: 'Repairing',
		REPAIRED: 'Repaired',
		HEALTHY: 'Healthy',
		ONLINE: 'Online',
		OFFLINE: 'Offline',
		NEVER_SEEN: 'Never seen',
	};
	const MEANING = {
		AFFECTED: 'A domain controller whose Exchange services fail to log on, lack a right, ' +
			'or whose POP3/IMAP users get 13003 since the promotion',
		NEEDS_SP_REINSTALL: 'Repaired, yet POP3/IMAP logons still fail: reapply the service pack',
		DEGRADED: 'An Exchange service is not running, or auth errors occur, outside the ' +
			'dcpromo rules',
		AT_RISK: 'Not promoted yet; an Exchange service logs on as a local account or lacks a ' +
			'right: promotion will break it',
		REPAIRING: 'A repair command is in flight',
		REPAIRED: 'Was affected; a repair succeeded and nothing is wrong since',
		HEALTHY: 'Nothing wrong',
		ONLINE: 'The agent is connected',
		OFFLINE: 'No traffic from the agent for three heartbeat intervals',
		NEVER_SEEN: 'In the wave plan, but no agent has reported',
	};
	/* A host with no status has never reported: "Never seen" is the
	 * connectivity, "No status" the health. */
	const STATUS_LABEL = Object.assign({}, LABEL, {NEVER_SEEN: 'No status'});
	const RIGHTS = ['SeServiceLogonRight', 'SeTcbPrivilege', 'SeRestorePrivilege'];

	const state = {
		route: {view: 'fleet'},
		filter: {status: '', connectivity: '', wave: '', q: ''},
		sort: {key: 'host', dir: 1},
		rowsShown: MAX_ROWS,
		summary: null,
		waves: null,
		hosts: null,
		hostsTotal: 0,
		hostsFilterKey: '',
		host: null,
		hostError: null,
		updatedAt: null,
		signedOut: false,
		error: null,
		timer: 0,
		inFlight: null,
		generation: 0,
	};

	/* ---- small helpers ---- */

	const $ = (id) => document.getElementById(id);

	/* el('span', {class: 'x', data: {status: 'A'}, title: 't'}, 'text', child...) */
	function el(tag, attrs, ...children) {
		const e = document.createElement(tag);
		for (const [k, v] of Object.entries(attrs || {})) {
			if (v === undefined || v === null || v === false)
				continue;
			if (k === 'class')
				e.className = v;
			else if (k === 'data')
				for (const [dk, dv] of Object.entries(v))
					e.dataset[dk] = String(dv);
			else if (k === 'on')
				for (const [ev, fn] of Object.entries(v))
					e.addEventListener(ev, fn);
			else
				e.setAttribute(k, v === true ? '' : String(v));
		}
		append(e, children);
		return e;
	}

	function append(parent, children) {
		for (const c of children) {
			if (c === undefined || c === null || c === false)
				continue;
			if (Array.isArray(c))
				append(parent, c);
			else if (c instanceof Node)
				parent.appendChild(c);
			else
				parent.appendChild(document.createTextNode(String(c)));
		}
	}

	function replace(parent, ...children) {
		parent.replaceChildren();
		append(parent, children);
		return parent;
	}

	const num = (v) => (typeof v === 'number' && isFinite(v) ? v : 0);
	const plural = (n, one, many) => n + ' ' + (n === 1 ? one : (many || one + 's'));

	function pad(n) {
		return n < 10 ? '0' + n : String(n);
	}

	/* Times are milliseconds since 1970 in the API; shown in UTC like the
	 * evidence and exfleetctl: 2026-11-29 10:02:11Z. */
	function utc(ms) {
		if (typeof ms !== 'number' || !ms)
			return '';
		const d = new Date(ms);
		return d.getUTCFullYear() + '-' + pad(d.getUTCMonth() + 1) + '-' + pad(d.getUTCDate()) +
			' ' + pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes()) + ':' +
			pad(d.getUTCSeconds()) + 'Z';
	}

	function ago(ms, now) {
		if (typeof ms !== 'number' || !ms)
			return 'never';
		const s = Math.round((now - ms) / 1000);
		if (s < 0)
			return 'just now';
		if (s < 60)
			return s + ' s ago';
		if (s < 3600)
			return Math.floor(s / 60) + ' min ago';
		if (s < 86400 * 2)
			return Math.floor(s / 3600) + ' h ago';
		return Math.floor(s / 86400) + ' days ago';
	}

	function clock(d) {
		return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
	}

	/* A host without a status has never reported: the API counts it as
	 * NEVER_SEEN (summary's by_status, the wave report). */
	function statusKey(s) {
		return s && LABEL[s] ? s : 'NEVER_SEEN';
	}

	function badge(status) {
		const k = statusKey(status);
		return el('span', {class: 'badge st-' + k, data: {status: k}, title: MEANING[k]},
			status ? status : 'NEVER_SEEN');
	}

	function connBadge(c) {
		const k = LABEL[c] ? c : 'NEVER_SEEN';
		return el('span', {class: 'conn cn-' + k, data: {connectivity: k}, title: MEANING[k]},
			LABEL[k]);
	}

	function waveName(w) {
		if (w === null || w === undefined || w === '')
			return '(no wave)';
		return /^wave\b/i.test(String(w)) ? String(w) : 'Wave ' + w;
	}

	/* ---- the API ---- */

	class SignedOut extends Error {}

	class ApiError extends Error {
		constructor(status, message) {
			super(message);
			this.status = status;
		}
	}

	async function api(path) {
		const ctl = new AbortController();
		const t = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
		let res;
		try {
			res = await fetch(path, {
				credentials: 'same-origin',
				cache: 'no-store',
				headers: {Accept: 'application/json'},
				signal: ctl.signal,
			});
		} catch (e) {
			throw new ApiError(0, e.name === 'AbortError'
				? 'no answer within ' + FETCH_TIMEOUT_MS / 1000 + ' s'
				: 'cannot reach the collector');
		} finally {
			clearTimeout(t);
		}
		if (res.status === 401)
			throw new SignedOut('not signed in');
		let body = null;
		try {
			body = await res.json();
		} catch (e) {
			body = null;
		}
		if (!res.ok) {
			const msg = body && body.error && body.error.message;
			throw new ApiError(res.status, msg || 'HTTP ' + res.status);
		}
		if (body === null)
			throw new ApiError(res.status, path + ': the answer is not JSON');
		return body;
	}

	function query(params) {
		const q = new URLSearchParams();
		for (const [k, v] of Object.entries(params))
			if (v !== '' && v !== null && v !== undefined)
				q.set(k, v);
		const s = q.toString();
		return s ? '?' + s : '';
	}

	/* Every page of a paged list, up to maxPages: {items, total}. */
	async function pages(path, params, maxPages) {
		let items = [];
		let offset = 0, total = 0;
		for (let n = 0; n < maxPages; n++) {
			const page = await api(path + query(Object.assign({}, params,
				{limit: PAGE, offset: offset})));
			items = items.concat(page.items || []);
			total = num(page.total);
			if (page.next === null || page.next === undefined)
				break;
			offset = page.next;
		}
		return {items: items, total: total};
	}

	function hostParams() {
		const f = state.filter;
		return {status: f.status, connectivity: f.connectivity, wave: f.wave};
	}

	/* ---- refreshing ---- */

	async function refresh() {
		clearTimeout(state.timer);
		const gen = ++state.generation;
		const route = state.route;
		try {
			if (route.view === 'host') {
				let host = null, hostError = null;
				try {
					host = await api('/api/v1/hosts/' + encodeURIComponent(route.id));
				} catch (e) {
					if (!(e instanceof ApiError) || e.status !== 404)
						throw e;
					hostError = e.message;
				}
				if (gen !== state.generation)
					return;
				state.host = host;
				state.hostError = hostError;
			} else {
				const filterKey = JSON.stringify(hostParams());
				const [summary, waves, hosts] = await Promise.all([
					api('/api/v1/summary'),
					pages('/api/v1/waves', {}, 10),
					pages('/api/v1/hosts', hostParams(), MAX_HOST_PAGES),
				]);
				if (gen !== state.generation)
					return;
				state.summary = summary;
				state.waves = waves.items;
				state.hosts = hosts.items;
				state.hostsTotal = hosts.total;
				state.hostsFilterKey = filterKey;
			}
			state.signedOut = false;
			state.error = null;
			state.updatedAt = new Date();
		} catch (e) {
			if (gen !== state.generation)
				return;
			if (e instanceof SignedOut) {
				state.signedOut = true;
			} else {
				state.error = e.message || String(e);
				if (!(e instanceof ApiError))
					console.error(e);
			}
		}
		render();
		/* Signed out: the sign-in link loads this page anew. */
		if (!state.signedOut)
			state.timer = setTimeout(tick, REFRESH_MS);
	}

	function tick() {
		if (document.hidden) {
			state.timer = setTimeout(tick, REFRESH_MS);
			return;
		}
		refresh();
	}

	/* ---- routing ---- */

	function parseHash() {
		const h = location.hash.replace(/^#/, '') || '/';
		const m = /^\/host\/([^/?]+)$/.exec(h);
		if (m) {
			let id;
			try {
				id = decodeURIComponent(m[1]);
			} catch (e) {
				id = m[1];
			}
			return {view: 'host', id: id};
		}
		const q = new URLSearchParams(h.indexOf('?') >= 0 ? h.slice(h.indexOf('?') + 1) : '');
		state.filter = {
			status: q.get('status') || '',
			connectivity: q.get('connectivity') || '',
			wave: q.get('wave') || '',
			q: q.get('q') || '',
		};
		return {view: 'fleet'};
	}

	function fleetHash() {
		return '#/' + query(state.filter);
	}

	function onHash() {
		const prev = state.route;
		state.route = parseHash();
		if (state.route.view === 'host' && (prev.view !== 'host' || prev.id !== state.route.id)) {
			state.host = null;
			state.hostError = null;
		}
		state.rowsShown = MAX_ROWS;
		syncFilterControls();
		render();
		const needHosts = state.route.view === 'fleet' &&
			JSON.stringify(hostParams()) !== state.hostsFilterKey;
		if (state.route.view === 'host' || needHosts || !state.summary)
			refresh();
		if (state.route.view === 'host')
			window.scrollTo(0, 0);
	}

	/* Filters change the hash in place: the back button leaves the fleet
	 * view rather than stepping through every keystroke. */
	function setFilter(change) {
		Object.assign(state.filter, change);
		state.rowsShown = MAX_ROWS;
		history.replaceState(null, '', fleetHash());
		syncFilterControls();
		if (JSON.stringify(hostParams()) !== state.hostsFilterKey) {
			renderHosts(); /* shows "loading" until the new list is in */
			refresh();
		} else {
			render();
		}
	}

	/* ---- the fleet view ---- */

	function render() {
		const b = document.body;
		$('banner').hidden = !state.error;
		if (state.error) {
			replace($('banner'), 'Cannot refresh: ' + state.error +
				(state.updatedAt ? '. Showing what was read at ' + clock(state.updatedAt) : '') +
				'; trying again every ' + REFRESH_MS / 1000 + ' s.');
		}
		if (state.updatedAt) {
			$('updated').textContent = 'updated ' + clock(state.updatedAt);
			$('updated').dataset.updated = state.updatedAt.toISOString();
		}
		$('updated').classList.toggle('stale', !!state.error);
		if (state.signedOut) {
			b.dataset.state = 'signed-out';
			$('signed-out').hidden = false;
			$('fleet-view').hidden = true;
			$('host-view').hidden = true;
			$('updated').textContent = 'not signed in';
			$('updated').classList.add('off');
			renderCrumbs();
			return;
		}
		$('signed-out').hidden = true;
		$('updated').classList.remove('off');
		const fleet = state.route.view === 'fleet';
		$('fleet-view').hidden = !fleet;
		$('host-view').hidden = fleet;
		renderCrumbs();
		if (fleet) {
			if (state.summary) {
				syncWaveOptions();
				renderSummary();
				renderWaves();
				renderHosts();
			}
			b.dataset.state = state.summary ? 'ready' : (state.error ? 'error' : 'loading');
		} else {
			renderHost();
			b.dataset.state = state.host || state.hostError ? 'ready'
				: (state.error ? 'error' : 'loading');
		}
	}

	function renderCrumbs() {
		const c = $('crumbs');
		if (state.route.view === 'host' && !state.signedOut)
			replace(c, el('a', {href: fleetHash()}, 'Fleet'), ' / ',
				el('span', {}, state.route.id));
		else
			c.replaceChildren();
	}

	function tile(kind, key, count, total, active, onclick) {
		const pct = total ? Math.round(count * 100 / total) : 0;
		const attrs = {
			type: 'button',
			class: 'tile ' + (kind === 'status' ? 'st-' : 'cn-') + key +
				(count ? '' : ' zero') + (active ? ' active' : ''),
			title: MEANING[key] + '. Click to list them.',
			data: {count: count},
			on: {click: onclick},
		};
		attrs.data[kind] = key;
		return el('button', attrs,
			el('span', {class: 'tile-count'}, String(count)),
			el('span', {class: 'tile-pct'}, total ? pct + '%' : ''),
			el('span', {class: 'tile-label'}, (kind === 'status' ? STATUS_LABEL : LABEL)[key]));
	}

	function renderSummary() {
		const s = state.summary;
		const total = num(s.hosts);
		const byStatus = s.by_status || {};
		const byConn = s.by_connectivity || {};
		$('fleet-total').textContent = plural(total, 'host');
		$('fleet-total').dataset.hosts = total;
		const f = state.filter;
		replace($('status-tiles'), STATUSES.map((st) => tile('status', st, num(byStatus[st]),
			total, f.status === st,
			() => setFilter({status: f.status === st ? '' : st}))),
		/* No status: the API has no such filter, but these are the hosts
		 * that never connected. */
		tile('status', 'NEVER_SEEN', num(byStatus.NEVER_SEEN), total,
			f.connectivity === 'NEVER_SEEN' && !f.status,
			() => setFilter(f.connectivity === 'NEVER_SEEN' ? {connectivity: ''}
				: {status: '', connectivity: 'NEVER_SEEN'})));
		replace($('connectivity-tiles'), CONNECTIVITY.map((c) => tile('connectivity', c,
			num(byConn[c]), total, f.connectivity === c,
			() => setFilter({connectivity: f.connectivity === c ? '' : c}))));
	}

	function renderLegend() {
		replace($('wave-legend'), BAR_ORDER.map((k) =>
			el('span', {class: 'legend-item', title: MEANING[k]},
				el('span', {class: 'swatch st-' + k}), STATUS_LABEL[k])));
	}

	function renderWaves() {
		renderLegend();
		const box = $('waves');
		const waves = state.waves || [];
		if (!waves.length) {
			replace(box, el('p', {class: 'muted'},
				'No waves: import a wave plan (exfleetctl waves import) or give agents a ' +
				'wave label.'));
			return;
		}
		const now = Date.now();
		replace(box, waves.map((w) => waveRow(w, now)));
	}

	function waveRow(w, now) {
		const key = w.wave === null || w.wave === undefined ? '' : String(w.wave);
		const hosts = num(w.hosts);
		const byStatus = w.by_status || {};
		let counted = 0;
		for (const st of STATUSES)
			counted += num(byStatus[st]);
		const counts = Object.assign({}, byStatus, {NEVER_SEEN: Math.max(0, hosts - counted)});
		/* done: promoted and HEALTHY or REPAIRED, as the wave report counts. */
		const done = typeof w.done === 'number' ? w.done : null;
		const pct = done !== null && hosts ? done * 100 / hosts : null;

		const bar = el('div', {class: 'bar', role: 'img',
			'aria-label': BAR_ORDER.filter((k) => num(counts[k]))
				.map((k) => num(counts[k]) + ' ' + STATUS_LABEL[k].toLowerCase()).join(', ')});
		for (const k of BAR_ORDER) {
			const n = num(counts[k]);
			if (!n)
				continue;
			const seg = el('button', {type: 'button', class: 'seg st-' + k,
				data: {status: k, count: n},
				title: waveName(w.wave) + ': ' + plural(n, 'host') + ' ' +
					STATUS_LABEL[k].toLowerCase() +
					(key ? '. Click to list them.' : ''),
				on: {click: () => {
					if (key)
						showHosts(k === 'NEVER_SEEN'
							? {status: '', wave: key, connectivity: 'NEVER_SEEN'}
							: {status: k, wave: key, connectivity: ''});
				}}},
			n >= 1 ? String(n) : '');
			seg.style.width = (hosts ? n * 100 / hosts : 0) + '%';
			bar.appendChild(seg);
		}

		const conn = w.by_connectivity || {};
		const online = num(conn.ONLINE), offline = num(conn.OFFLINE), never = num(conn.NEVER_SEEN);
		const meta = [num(w.promoted) + ' promoted'];
		if (offline)
			meta.push(offline + ' offline');
		if (never)
			meta.push(never + ' never seen');

		const done_bar = el('div', {class: 'donebar'});
		if (pct !== null) {
			const fill = el('span', {class: 'donefill'});
			fill.style.width = Math.min(100, Math.max(0, pct)) + '%';
			done_bar.appendChild(fill);
		}
		const data = {wave: key, total: hosts, promoted: num(w.promoted),
			online: online, offline: offline, neverSeen: never};
		if (done !== null)
			data.done = done;
		for (const k of BAR_ORDER)
			data['count' + k.charAt(0) + k.slice(1).toLowerCase().replace(/_(.)/g,
				(m, c) => c.toUpperCase())] = num(counts[k]);
		return el('div', {class: 'wave', data: data},
			el('div', {class: 'wave-name'},
				key ? el('a', {href: '#/' + query({wave: key}),
					on: {click: (ev) => {
						ev.preventDefault();
						showHosts({wave: key, status: '', connectivity: ''});
					}}}, waveName(w.wave)) : waveName(w.wave),
				el('span', {class: 'wave-date'}, w.planned_date ? w.planned_date : '')),
			el('div', {class: 'wave-bars'}, bar, done_bar),
			el('div', {class: 'wave-pct', title: 'promoted and healthy or repaired'},
				pct === null ? '–' : (Math.round(pct * 10) / 10) + '%',
				el('span', {class: 'wave-pct-label'}, ' done')),
			el('div', {class: 'wave-meta'},
				(done === null ? '' : done + '/' + hosts + ' done · ') + meta.join(' · ')));
	}

	/* From a wave: exactly these hosts, whatever was searched before. */
	function showHosts(change) {
		setFilter(Object.assign({q: ''}, change));
		const t = $('hosts-title');
		if (t.scrollIntoView)
			t.scrollIntoView({block: 'start'});
	}

	/* ---- the host table ---- */

	const SEVERITY = {};
	STATUSES.forEach((s, i) => { SEVERITY[s] = i; });
	SEVERITY.NEVER_SEEN = STATUSES.length;
	const CONN_ORDER = {OFFLINE: 0, NEVER_SEEN: 1, ONLINE: 2};

	const COLUMNS = [
		{key: 'host', label: 'Host', get: (h) => h.host_id || ''},
		{key: 'site', label: 'Site', get: (h) => h.site || ''},
		{key: 'wave', label: 'Wave', get: (h) => h.wave || '', numeric: true},
		{key: 'status', label: 'Status', get: (h) => SEVERITY[statusKey(h.status)]},
		{key: 'connectivity', label: 'Connectivity',
			get: (h) => CONN_ORDER[h.connectivity] !== undefined ? CONN_ORDER[h.connectivity] : 3},
		{key: 'last_seen', label: 'Last seen', get: (h) => -num(h.last_seen)},
		{key: 'evidence', label: 'Evidence', get: null},
	];

	function compare(a, b, numeric) {
		if (typeof a === 'number' && typeof b === 'number')
			return a - b;
		return String(a).localeCompare(String(b), undefined,
			{numeric: !!numeric, sensitivity: 'base'});
	}

	function matches(h, q) {
		if (!q)
			return true;
		const needle = q.toLowerCase();
		if ((h.host_id || '').toLowerCase().includes(needle) ||
		    (h.site || '').toLowerCase().includes(needle))
			return true;
		return (h.evidence || []).some((e) => String(e).toLowerCase().includes(needle));
	}

	function visibleHosts() {
		const rows = (state.hosts || []).filter((h) => matches(h, state.filter.q.trim()));
		const col = COLUMNS.find((c) => c.key === state.sort.key);
		if (col && col.get) {
			rows.sort((a, b) => state.sort.dir * compare(col.get(a), col.get(b), col.numeric) ||
				compare(a.host_id || '', b.host_id || ''));
		}
		return rows;
	}

	function renderHostHead() {
		replace($('host-table-head'), COLUMNS.map((c) => {
			if (!c.get)
				return el('th', {}, c.label);
			const active = state.sort.key === c.key;
			return el('th', {'aria-sort': active ? (state.sort.dir > 0 ? 'ascending' : 'descending')
				: null},
			el('button', {type: 'button', class: 'sort' + (active ? ' active' : ''),
				on: {click: () => {
					state.sort = {key: c.key, dir: active ? -state.sort.dir : 1};
					renderHosts();
				}}},
			c.label, active ? (state.sort.dir > 0 ? ' ▲' : ' ▼') : ''));
		}));
	}

	function renderHosts() {
		renderHostHead();
		const tbody = $('host-rows');
		const loading = JSON.stringify(hostParams()) !== state.hostsFilterKey;
		$('host-table').classList.toggle('loading', loading);
		if (!state.hosts) {
			replace(tbody, el('tr', {}, el('td', {colspan: COLUMNS.length, class: 'muted'},
				'loading…')));
			return;
		}
		const rows = visibleHosts();
		const loaded = state.hosts.length;
		const filtered = state.filter.status || state.filter.connectivity || state.filter.wave ||
			state.filter.q;
		$('hosts-count').textContent = filtered
			? rows.length + ' of ' + (state.summary ? num(state.summary.hosts) : loaded) + ' shown'
			: plural(rows.length, 'host');
		$('hosts-count').dataset.shown = rows.length;
		const now = Date.now();
		const shown = rows.slice(0, state.rowsShown);
		if (!shown.length) {
			replace(tbody, el('tr', {}, el('td', {colspan: COLUMNS.length, class: 'muted empty'},
				loading ? 'loading…' : 'No host matches these filters.')));
		} else {
			replace(tbody, shown.map((h) => hostRow(h, now)));
		}
		const more = $('hosts-more');
		const notes = [];
		if (rows.length > shown.length)
			notes.push(el('button', {type: 'button', class: 'link',
				on: {click: () => { state.rowsShown += MAX_ROWS; renderHosts(); }}},
			'Show ' + Math.min(MAX_ROWS, rows.length - shown.length) + ' more of ' +
				(rows.length - shown.length)));
		if (state.hostsTotal > loaded)
			notes.push(' The fleet view holds the first ' + loaded + ' of ' + state.hostsTotal +
				' hosts; filter by wave or status to see the others.');
		more.hidden = !notes.length;
		replace(more, notes);
	}

	function hostLink(id) {
		return '#/host/' + encodeURIComponent(id);
	}

	function hostRow(h, now) {
		const ev = h.evidence || [];
		const href = hostLink(h.host_id);
		return el('tr', {data: {host: h.host_id, status: statusKey(h.status)},
			on: {click: (e) => {
				if (e.target.closest('a') || (window.getSelection &&
					String(window.getSelection()).length))
					return;
				location.hash = href;
			}}},
		el('td', {class: 'mono'}, el('a', {href: href}, h.host_id)),
		el('td', {}, h.site || '–'),
		el('td', {}, h.wave || '–'),
		el('td', {}, badge(h.status)),
		el('td', {}, connBadge(h.connectivity)),
		el('td', {class: 'nowrap', title: utc(h.last_seen)}, ago(h.last_seen, now)),
		el('td', {class: 'evidence'}, ev.length ? ev[0] : '',
			ev.length > 1 ? el('span', {class: 'more', title: ev.slice(1).join('\n')},
				' +' + (ev.length - 1)) : ''));
	}

	/* The filter controls are built once; refreshes leave them (and the
	 * search box's focus and caret) alone. */
	function buildFilterControls() {
		const status = $('filter-status');
		replace(status, el('option', {value: ''}, 'any'),
			STATUSES.map((s) => el('option', {value: s}, LABEL[s])));
		const conn = $('filter-connectivity');
		replace(conn, el('option', {value: ''}, 'any'),
			CONNECTIVITY.map((c) => el('option', {value: c}, LABEL[c])));
		status.addEventListener('change', () => setFilter({status: status.value}));
		conn.addEventListener('change', () => setFilter({connectivity: conn.value}));
		$('filter-wave').addEventListener('change', () => setFilter({wave: $('filter-wave').value}));
		$('filter-search').addEventListener('input', () =>
			setFilter({q: $('filter-search').value}));
		$('filter-clear').addEventListener('click', () =>
			setFilter({status: '', connectivity: '', wave: '', q: ''}));
		$('filters').addEventListener('submit', (e) => e.preventDefault());
	}

	function syncFilterControls() {
		const f = state.filter;
		$('filter-status').value = f.status;
		$('filter-connectivity').value = f.connectivity;
		syncWaveOptions();
		if ($('filter-search').value !== f.q)
			$('filter-search').value = f.q;
	}

	function syncWaveOptions() {
		const sel = $('filter-wave');
		const waves = (state.waves || []).map((w) => w.wave)
			.filter((w) => w !== null && w !== undefined && w !== '').map(String);
		if (state.filter.wave && !waves.includes(state.filter.wave))
			waves.push(state.filter.wave);
		const want = [''].concat(waves);
		const have = Array.from(sel.options).map((o) => o.value);
		if (want.join('\n') !== have.join('\n')) {
			replace(sel, want.map((w) => el('option', {value: w}, w === '' ? 'any' : w)));
		}
		sel.value = state.filter.wave;
	}

	/* ---- one host ---- */

	/* The command that repairs this host, as exfleetctl takes it; run on
	 * the operator's machine, which holds the signing key. exfleetctl finds
	 * the collector, CA, certificate and key in its ctl.ini, as it did for
	 * the sign-in link, and signs with that certificate. */
	function repairCommand(h) {
		if (h.status === 'NEEDS_SP_REINSTALL')
			return {
				text: 'exfleetctl repair --service-pack --host ' + h.host_id,
				why: 'POP3/IMAP users still fail after the credential repair: reapply the ' +
					'service pack (the installer named in the agent\'s configuration).',
			};
		if (h.status !== 'AFFECTED')
			return null;
		const account = serviceAccount(h);
		return {
			text: 'exfleetctl repair --host ' + h.host_id + " --account '" + account.name + "'",
			why: 'Verifies the password of ' + account.name + ', grants it ' + RIGHTS.join(', ') +
				', sets it on the Exchange services, restarts them in order and rescans. ' +
				'exfleetctl asks for the password (or give --password-file) and seals it to ' +
				'this host\'s agent; add --dry-run to see the plan first.' +
				(account.guessed ? ' ' + account.guessed : ''),
		};
	}

	/* The domain account the Exchange services should log on as: the one
	 * they use when it is a domain account, else the same name in the
	 * host's domain (the local account is gone after promotion). */
	function serviceAccount(h) {
		const seen = new Map();
		for (const s of h.services || []) {
			const a = s.logon_account || '';
			/* LocalSystem and NT AUTHORITY\...: built in, not the account to set */
			if (a.indexOf('\\') < 0 || /^NT AUTHORITY\\/i.test(a))
				continue;
			seen.set(a, (seen.get(a) || 0) + 1);
		}
		let account = '';
		let best = 0;
		for (const [a, n] of seen)
			if (n > best) {
				account = a;
				best = n;
			}
		const slash = account.indexOf('\\');
		const prefix = slash >= 0 ? account.slice(0, slash) : '';
		const name = slash >= 0 ? account.slice(slash + 1) : account;
		const local = prefix === '.' || prefix.toUpperCase() === String(h.host_id).toUpperCase();
		if (account && slash >= 0 && !local)
			return {name: account, guessed: ''};
		const domain = h.domain || 'DOMAIN';
		return {
			name: domain + '\\' + (name || 'ACCOUNT'),
			guessed: account
				? 'The services logged on as ' + account + ', a local account that promotion ' +
					'deleted; the command names ' + domain + '\\' + name + ': change it if the ' +
					'domain account differs.'
				: 'Name the domain account the Exchange services should log on as.',
		};
	}

	function section(title, count, ...body) {
		return el('section', {class: 'panel'},
			el('h2', {}, title, count !== null && count !== undefined
				? el('span', {class: 'count'}, count) : ''),
			body);
	}

	function table(cls, headers, rows, empty) {
		if (!rows.length)
			return el('p', {class: 'muted'}, empty);
		return el('div', {class: 'table-wrap'}, el('table', {class: cls},
			el('thead', {}, el('tr', {}, headers.map((x) => el('th', {}, x)))),
			el('tbody', {}, rows)));
	}

	function fact(label, value, attrs) {
		return [el('dt', {}, label), el('dd', attrs || {}, value === null || value === undefined ||
			value === '' ? '–' : value)];
	}

	function yesNo(v) {
		return v === true ? 'yes' : v === false ? 'no' : null;
	}

	function renderHost() {
		const view = $('host-view');
		const h = state.host;
		if (!h) {
			if (state.hostError)
				replace(view, el('section', {class: 'panel', data: {host: ''}},
					el('h1', {}, state.route.id),
					el('p', {}, state.hostError + '.'),
					el('p', {}, el('a', {href: fleetHash()}, '← back to the fleet'))));
			else if (!view.firstChild || view.dataset.host !== state.route.id)
				replace(view, el('p', {class: 'muted pad'}, 'loading ' + state.route.id + '…'));
			return;
		}
		view.dataset.host = h.host_id;
		const now = Date.now();
		const k = statusKey(h.status);
		const repair = repairCommand(h);
		const evidence = h.evidence || [];

		const head = el('section', {class: 'panel host-head st-border-' + k,
			data: {host: h.host_id, status: k, connectivity: h.connectivity || ''}},
		el('div', {class: 'host-title'},
			el('h1', {id: 'host-id', class: 'mono'}, h.host_id),
			badge(h.status), connBadge(h.connectivity),
			el('span', {class: 'muted'}, h.status_since
				? 'since ' + utc(h.status_since) + ' (' + ago(h.status_since, now) + ')' : '')),
		el('p', {class: 'meaning'}, MEANING[k]),
		evidence.length ? el('ul', {id: 'host-evidence', class: 'evidence-list'},
			evidence.map((e) => el('li', {}, e))) : null);

		const repairBox = repair ? el('section', {class: 'panel repair', id: 'repair'},
			el('h2', {}, 'Repair from your workstation'),
			el('p', {}, repair.why),
			el('div', {class: 'cmd'},
				el('pre', {}, el('code', {id: 'repair-command'}, repair.text)),
				el('button', {type: 'button', class: 'copy',
					on: {click: (e) => copy(e.target, repair.text)}}, 'Copy')),
			el('p', {class: 'muted small'}, 'Run it where you ran exfleetctl dashboard: it ' +
				'reaches the collector with the same configuration (ctl.ini) and signs each ' +
				'step with your certificate, which must be an operator\'s.')) : null;

		const facts = el('dl', {class: 'facts'},
			fact('Wave', h.wave ? waveName(h.wave) + (h.planned_date ? ', planned ' + h.planned_date
				: '') : null),
			fact('Site', h.site),
			fact('Role', roleName(h.role)),
			fact('Domain', h.domain),
			fact('Promoted', h.promoted_at ? utc(h.promoted_at) : (h.role_changed_at
				? utc(h.role_changed_at) : 'not yet')),
			fact('Repaired', h.repaired_at ? utc(h.repaired_at) : null),
			fact('Exchange', h.exchange_version ? h.exchange_version +
				(h.exchange_sp !== null && h.exchange_sp !== undefined ? ' SP' + h.exchange_sp : '') +
				(h.sp_needs_reapply ? ' (service pack needs reapplying)' : '') : null),
			fact('Local accounts (SAM)', h.sam_present === true ? 'present'
				: h.sam_present === false ? 'gone (domain controller)' : null),
			fact('Last seen', h.last_seen ? utc(h.last_seen) + ' (' + ago(h.last_seen, now) + ')'
				: 'never'),
			fact('First seen', h.first_seen ? utc(h.first_seen) : null),
			fact('Agent', h.agent_version ? h.agent_version + ' on ' + (h.platform || '?') : null),
			fact('Spool drops', h.spool_dropped ? String(h.spool_dropped) : h.spool_dropped === 0
				? 'none' : null, h.spool_dropped ? {class: 'warn'} : null));

		const services = (h.services || []).map((s) => {
			const rights = s.rights || [];
			/* Unreadable rights (the account is gone: 1332) are not "missing". */
			const missing = s.rights_error ? [] : RIGHTS.filter((r) => !rights.includes(r));
			const running = s.state === 'SERVICE_RUNNING';
			return el('tr', {data: {service: s.name}},
				el('td', {}, el('span', {class: 'mono'}, s.name),
					s.display_name ? el('div', {class: 'muted small'}, s.display_name) : ''),
				el('td', {class: running ? 'ok' : 'bad'}, enumName(s.state, 'SERVICE_'),
					!running && s.win32_exit_code ? el('div', {class: 'small'},
						'exit ' + s.win32_exit_code + (s.service_exit_code
							? ' / ' + s.service_exit_code : '')) : ''),
				el('td', {}, enumName(s.start_type, 'START_')),
				el('td', {class: 'mono'}, s.logon_account || '–'),
				el('td', {class: s.account_status === 'ACCOUNT_EXISTS' ? '' : 'bad'},
					enumName(s.account_status, 'ACCOUNT_')),
				el('td', {class: 'rights'},
					rights.map((r) => el('span', {class: 'chip'}, r)),
					missing.map((r) => el('span', {class: 'chip missing', title: 'required, missing'},
						r + ' missing')),
					s.rights_error ? el('span', {class: 'chip missing'}, 'cannot read the rights: ' +
						s.rights_error + (s.rights_error === 1332 ? ' (no such account)' : ''))
						: ''));
		});

		const history = ((h.status_history || {}).items || []).map((x) =>
			el('tr', {}, el('td', {class: 'nowrap'}, utc(x.at)), el('td', {}, badge(x.status)),
				el('td', {class: 'evidence'}, (x.evidence || []).map((e) => el('div', {}, e)))));

		const events = ((h.recent_events || {}).items || []).map((e) =>
			el('tr', {class: 'ev-' + String(e.type || '').toLowerCase()},
				el('td', {class: 'nowrap'}, utc(e.time_generated)),
				el('td', {}, e.log || ''),
				el('td', {class: 'nowrap'}, (e.source || '') + '/' + (e.event_id || '')),
				el('td', {}, enumName(e.type, 'EVENT_')),
				el('td', {}, e.message || (e.strings || []).join(' '))));

		const commands = ((h.commands || {}).items || []).map((c) => {
			const r = c.result;
			const failedSteps = r && r.steps ? r.steps.filter((s) => !s.ok) : [];
			return el('tr', {data: {command: c.command_id, state: c.state || ''}},
				el('td', {class: 'nowrap'}, utc(c.issued_at)),
				el('td', {}, c.action || ''),
				el('td', {}, c.issuer || ''),
				el('td', {class: 'cmd-' + (c.state || '')}, c.state || ''),
				el('td', {},
					r ? enumName(r.status, 'COMMAND_') : '',
					r && r.reason ? el('div', {class: 'small'}, r.reason) : '',
					failedSteps.map((s) => el('div', {class: 'small bad'},
						s.step + ' ' + (s.target || '') + ': ' + (s.win32_error ? s.win32_error +
							' ' : '') + (s.message || ''))),
					r && r.steps && r.steps.length && !failedSteps.length
						? el('div', {class: 'small muted'}, plural(r.steps.length, 'step') + ' ok')
						: ''),
				el('td', {class: 'mono small muted'}, String(c.command_id || '').slice(0, 12)));
		});

		const total = (x) => num((x || {}).total);
		const more = (x, n) => total(x) > n ? 'latest ' + n + ' of ' + total(x) : String(total(x));
		replace(view,
			el('p', {class: 'back'}, el('a', {href: fleetHash()}, '← Fleet')),
			head,
			repairBox,
			el('div', {class: 'cols'},
				section('Host', null, facts),
				section('Services and rights', (h.services || []).length,
					table('services', ['Service', 'State', 'Start', 'Logs on as', 'Account',
						'Rights'], services, h.last_seen ? 'No Exchange service reported.'
						: 'No agent has reported from this host.'))),
			section('Status history', more(h.status_history, history.length),
				table('history', ['At', 'Status', 'Evidence'], history, 'No status yet.')),
			section('Recent events', more(h.recent_events, events.length),
				table('events', ['Time', 'Log', 'Source/ID', 'Type', 'Message'], events,
					'No events forwarded.')),
			section('Commands', more(h.commands, commands.length),
				table('commands', ['Issued', 'Action', 'By', 'State', 'Result', 'Id'], commands,
					'No command was sent to this host.')));
	}

	function roleName(role) {
		const names = {
			ROLE_STANDALONE_WORKSTATION: 'standalone workstation',
			ROLE_MEMBER_WORKSTATION: 'member workstation',
			ROLE_STANDALONE_SERVER: 'standalone server',
			ROLE_MEMBER_SERVER: 'member server',
			ROLE_BACKUP_DC: 'backup domain controller',
			ROLE_PRIMARY_DC: 'primary domain controller',
		};
		return role ? names[role] || enumName(role, 'ROLE_') : null;
	}

	/* SERVICE_RUNNING -> running */
	function enumName(v, prefix) {
		if (v === null || v === undefined)
			return '';
		const s = String(v);
		return (s.startsWith(prefix) ? s.slice(prefix.length) : s).toLowerCase().replace(/_/g, ' ');
	}

	function copy(button, text) {
		const done = (msg) => {
			button.textContent = msg;
			setTimeout(() => { button.textContent = 'Copy'; }, 1500);
		};
		if (navigator.clipboard && navigator.clipboard.writeText)
			navigator.clipboard.writeText(text).then(() => done('Copied'),
				() => done('Select and copy'));
		else
			done('Select and copy');
	}

	/* ---- start ---- */

	function start() {
		buildFilterControls();
		window.addEventListener('hashchange', onHash);
		document.addEventListener('visibilitychange', () => {
			if (!document.hidden && state.updatedAt && !state.signedOut &&
			    Date.now() - state.updatedAt.getTime() > REFRESH_MS)
				refresh();
		});
		state.route = parseHash();
		syncFilterControls();
		refresh();
	}

	if (document.readyState === 'loading')
		document.addEventListener('DOMContentLoaded', start);
	else
		start();
})();
