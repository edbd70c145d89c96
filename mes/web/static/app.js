// mes dashboard: plain JavaScript (fetch + EventSource), no build step.
// Every request goes to this node's REST API at /api/v1 with the session cookie and the
// X-Requested-With header that cookie requests which change state must carry (CSRF rule).
"use strict";

const API = "/api/v1";
const POLL_MS = 2000;          // polling period when /api/v1/events is missing or down
const COALESCE_MS = 300;       // at most one refresh per entity per this period
const JOB_COALESCE_MS = 1000;  // jobs' tables (queue, history, my prints): at most once a second
const CLUSTER_POLL_MS = 5000;  // reachability changes make no events: poll while shown
// What drives each printer, in the words a farm uses (the printer's `api`).
const KINDS = { OctoPrint: "OctoPrint", PrusaLink: "PrusaLink", Moonraker: "Klipper (Moonraker)",
  Duet: "Duet (RepRapFirmware)", Mock: "mock printer" };
const ENDINGS = { done: "Done", rejected: "Rejected", canceled: "Canceled", lost: "Lost" };
const MAX_IDS = 200;           // ids per /dashboard/printers request

const S = {
  me: null,
  maxUpload: 0,  // the largest file the node accepts (bytes), from the session
  tab: location.hash.slice(1) || "printers",  // the tab survives a reload
  printers: { cursors: [null], page: 0, next: null, cards: new Map(), els: new Map() },
  history: { cursors: [null], page: 0, next: null },
  running: { cursors: [null], page: 0, next: null },
  queued: { cursors: [null], page: 0, next: null },
  groups: new Set(),
  spools: [],
  noThumbnail: new Set(),  // files whose thumbnail was not found: not asked for again
  overviewDrawn: "",  // what the overview's counts and groups show now
  selected: new Map(),  // printer id -> its card as last read (bulk actions, staff)
  mine: null,  // my jobs' statuses as last shown (job id -> status), for notifications
  minePrinters: new Set(),  // the printers my running jobs are on
};

// ---------------------------------------------------------------- small helpers

function $(selector, root = document) { return root.querySelector(selector); }

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style") el.style.cssText = value;  // CSSOM: allowed by the page's CSP
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function fmtTemp(actual, target) {
  const a = typeof actual === "number" ? actual.toFixed(0) : "–";
  const t = typeof target === "number" && target > 0 ? ` / ${target.toFixed(0)}` : "";
  return `${a}${t} °C`;
}

function fmtDuration(seconds) {
  if (typeof seconds !== "number" || !isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  const hh = Math.floor(s / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
  return hh ? `${hh} h ${mm} min` : mm ? `${mm} min ${ss} s` : `${ss} s`;
}

function fmtHours(hours) {
  return hours < 1 ? `${(hours * 60).toFixed(0)} min` : `${hours.toFixed(1)} h`;
}

function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleString();
}

class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status; this.code = code; this.field = field;
  }
}

async function api(method, path, { json, form, params } = {}) {
  const headers = { "X-Requested-With": "mes", "Accept": "application/json" };
  let body;
  if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  else if (form) body = form;
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    for (const v of Array.isArray(value) ? value : [value]) {
      if (v !== null && v !== undefined && v !== "") query.append(key, v);
    }
  }
  const url = API + path + (query.toString() ? `?${query}` : "");
  let response;
  try {
    response = await fetch(url, { method, headers, body, credentials: "same-origin" });
  } catch (err) {
    throw new ApiError(0, "network", "The server did not answer: check the connection and try again.");
  }
  hideMessage("network");  // the server answered: "did not answer" is no longer true
  const text = response.status === 204 ? "" : await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!response.ok) {
    const e = data && data.error ? data.error
      : { code: `http_${response.status}`, message: `The server answered ${response.status} ${response.statusText}`.trim() };
    throw new ApiError(response.status, e.code, e.message || "request failed", e.field);
  }
  return { data, response };
}

// The names of the fields a person fills in, as the page labels them.
const FIELD_LABELS = { print_weight_in_grams: "Weight", filament_id: "Spool", printer_id: "Printer",
  file: "File", filepath: "File name", reason: "Reason", group: "Group", owner_id: "Owner" };

// An error in words a person reads: field names as the page labels them, no API paths.
function plainWords(err) {
  if (!(err instanceof ApiError)) return "Something went wrong in the page: reload it.";
  if (err.status === 503 && err.code !== "network") {
    return "The farm could not confirm this in time: look whether it happened before trying again.";
  }
  const text = String(err.message || "The request failed.")
    .replace(/`/g, "")
    .replace(/\b[a-z]+(?:_[a-z]+)+\b/g, (word) => FIELD_LABELS[word] || word.replaceAll("_", " "));
  return text.charAt(0).toUpperCase() + text.slice(1);
}

// The banner: `kind` says when it is stale ("network": once the server answers again).
// A POST of a form with upload progress (fetch cannot report it): `onProgress(sent, total)`.
function apiUpload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", API + path);
    xhr.setRequestHeader("X-Requested-With", "mes");
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded, e.total); };
    xhr.onerror = () => reject(new ApiError(0, "network", "The server did not answer: check the connection and try again."));
    xhr.onload = () => {
      hideMessage("network");
      let data = null;
      try { data = xhr.responseText ? JSON.parse(xhr.responseText) : null; } catch (_) { data = null; }
      if (xhr.status >= 200 && xhr.status < 300) { resolve({ data }); return; }
      const e = data && data.error ? data.error
        : { code: `http_${xhr.status}`, message: `The server answered ${xhr.status} ${xhr.statusText}`.trim() };
      reject(new ApiError(xhr.status, e.code, e.message || "request failed", e.field));
    };
    xhr.send(form);
  });
}

function fmtBytes(bytes) {
  return bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(1)} GiB`
    : bytes >= 2 ** 20 ? `${(bytes / 2 ** 20).toFixed(1)} MiB` : `${Math.ceil(bytes / 1024)} KiB`;
}

function showMessage(text, ok = false, kind = "") {
  const box = $("#message");
  box.replaceChildren(h("span", {}, text),
    h("button", { class: "outline secondary small", type: "button", "aria-label": "dismiss",
      onclick: () => { box.hidden = true; } }, "×"));
  box.className = ok ? "ok" : "";
  box.dataset.kind = kind;
  box.hidden = false;
}

// A question in the page (never the browser's own dialogs): resolves true (or, with `input`,
// the text typed) when confirmed, null when not.
function ask(text, { yes = "OK", no = "Go back", input = null, value = "", type = "text" } = {}) {
  const dialog = $("#ask");
  const box = $("input[name=answer]", dialog);
  $("#ask-text").textContent = text;
  $("#ask-yes").textContent = yes;
  $("#ask-no").textContent = no;
  $("#ask-field").hidden = !input;
  $("#ask-label").textContent = input || "";
  box.value = value;
  box.type = type;
  box.required = Boolean(input);
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      if (dialog.returnValue !== "ok") resolve(null);
      else resolve(input ? box.value.trim() || null : true);
    }, { once: true });
    dialog.showModal();
    (input ? box : $("#ask-yes")).focus();
  });
}

function hideMessage(kind) {
  const box = $("#message");
  if (!kind || box.dataset.kind === kind) box.hidden = true;
}

// Run an action; any failure becomes a readable message (a 401 ends the session).
async function attempt(action, done) {
  try {
    const result = await action();
    if (done) showMessage(done, true);
    return result;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401 && S.me) {
      signedOut("Your session has ended: sign in again.");
    } else {
      showMessage(plainWords(err), false, err instanceof ApiError && err.code === "network" ? "network" : "");
      if (!(err instanceof ApiError)) console.error(err);
    }
    return undefined;
  }
}

// A loader that never runs twice at once: a call while it runs asks for one more run.
function serial(fn) {
  let running = null, again = false;
  const run = async () => {
    if (running) { again = true; return running; }
    running = (async () => {
      do { again = false; await attempt(fn); } while (again && S.me);
    })();
    try { await running; } finally { running = null; }
  };
  return run;
}

const staff = () => S.me && S.me.role !== "user";

// ---------------------------------------------------------------- sign-in

async function signInWith(body, submit) {
  const err = $("#sign-in-error");
  err.hidden = true;
  if (submit) { submit.setAttribute("aria-busy", "true"); submit.disabled = true; }
  try {
    const { data } = await api("POST", "/session", { json: body });
    signedIn(data.user, data.max_upload_bytes);
  } catch (e) {
    err.textContent = e instanceof ApiError ? plainWords(e) : "Signing in failed: try again.";
    err.hidden = false;
  } finally {
    if (submit) { submit.removeAttribute("aria-busy"); submit.disabled = false; }
  }
}

function signedIn(user, maxUpload) {
  S.me = user;
  S.overviewDrawn = "";  // another user: draw the overview afresh
  S.maxUpload = maxUpload || 0;
  S.mine = null;
  showNotifyState();
  $("#whoami").textContent = `${user.name} · ${user.role}`;
  $("#whoami").hidden = false;
  $("#sign-out").hidden = false;
  $("#sign-in").hidden = true;
  $("#app").hidden = false;
  $("#message").hidden = true;
  document.body.dataset.role = user.role;
  for (const el of document.querySelectorAll(".staff-only")) el.hidden = !staff();
  for (const el of document.querySelectorAll(".admin-only")) el.hidden = user.role !== "admin";
  for (const form of document.querySelectorAll("#sign-in form")) form.reset();
  Live.start();
  showTab(S.tab);
}

function signedOut(message) {
  S.me = null;
  Live.stop();
  $("#app").hidden = true;
  $("#whoami").hidden = true;
  $("#sign-out").hidden = true;
  $("#sign-in").hidden = false;
  $("#printer-grid").replaceChildren();
  S.printers.cards.clear(); S.printers.els.clear();
  S.selected.clear();
  const err = $("#sign-in-error");
  err.textContent = message || "";
  err.hidden = !message;
  $("#message").hidden = true;
}

// ---------------------------------------------------------------- tabs

const TABS = ["printers", "jobs", "spools", "cluster", "utilization", "accounts"];

function showTab(name) {
  if (!TABS.includes(name)) name = "printers";
  if (S.tab !== name) hideMessage();  // a banner is about the tab it was shown on
  S.tab = name;
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  for (const button of document.querySelectorAll(".tabs button")) {
    const on = button.dataset.tab === name;
    button.setAttribute("aria-selected", String(on));
    button.tabIndex = on ? 0 : -1;  // the ARIA tab pattern: one tab stop, arrows move
  }
  for (const section of document.querySelectorAll(".tab")) section.hidden = section.id !== `tab-${name}`;
  refreshTab(name);
  Live.retune();
}

function refreshTab(name) {
  if (!S.me) return;
  if (name === "printers") { loadPrinters(); Overview.schedule(); }
  else if (name === "jobs") { loadMine(); loadSpools(); loadQueue(); loadHistory(); loadFiles(); }
  else if (name === "spools") loadSpools();
  else if (name === "cluster") loadCluster();
  else if (name === "utilization") loadUtilization();
  else if (name === "accounts") loadAccounts();
}

// ---------------------------------------------------------------- printers

// A state, group or search filter is set: a change may move printers into or out of the page.
function filtered() {
  const p = printerParams();
  return Boolean(p.state || p.group || p.q);
}

// Show the changes of these printers: in place, or, when a filter is set and they may
// have moved into or out of it, by re-reading the page (the filter kept). `states`: the
// state each printer's last event said, where known.
function refreshShown(ids, states = new Map()) {
  if (!filtered()) return refreshCards(ids);
  const wanted = printerParams().state;
  const moved = [...ids].some((id) => {
    const state = states.get(id);
    if (state === undefined) return true;  // not known: it may have moved
    const card = S.printers.cards.get(id);
    if (card) return !card.status || card.status.state !== state;
    return Boolean(wanted) && (wanted === state
      || (wanted === "bed_to_clear" && (state === "idle" || state === "finished")));
  });
  return moved ? loadPrinters() : refreshCards(ids);
}

// Cards to read again, at most once a second: a wave of prints ending changes printers, their
// jobs and spools one after another, and each would re-read and redraw the same cards. The
// first change shows at once. A printer any of whose events did not say its state counts
// as not known (it may have moved out of a filtered page).
const CARD_REFRESH_MS = 1000;
const CardRefresh = {
  ids: new Set(), states: new Map(), unknown: new Set(), timer: null, last: 0,
  add(ids, states = new Map()) {
    for (const id of ids) {
      this.ids.add(id);
      if (states.has(id) && !this.unknown.has(id)) this.states.set(id, states.get(id));
      else { this.unknown.add(id); this.states.delete(id); }
    }
    if (this.timer) return;
    const wait = Math.max(0, this.last + CARD_REFRESH_MS - Date.now());
    this.timer = setTimeout(() => this.flush(), wait);
  },
  flush() {
    const { ids, states } = this;
    this.timer = null; this.last = Date.now();
    this.ids = new Set(); this.states = new Map(); this.unknown = new Set();
    if (S.tab === "printers" && ids.size) attempt(() => refreshShown(ids, states));
  },
};

function printerParams() {
  const form = new FormData($("#printer-filter"));
  return { state: form.get("state"), group: form.get("group").trim(), q: form.get("q").trim(),
    limit: form.get("limit") };
}

// ---------------------------------------------------------------- cameras

const CAMERA_MS = 5000;  // a shown camera's picture is read again this often

function cameraSrc(id) {
  return `${API}/printers/${encodeURIComponent(id)}/camera?t=${Math.floor(Date.now() / CAMERA_MS)}`;
}

// Pictures on screen are refreshed while the page is visible; those scrolled away are not.
const Cameras = {
  shown: new Set(),
  observer: "IntersectionObserver" in window ? new IntersectionObserver((entries) => {
    for (const e of entries) { if (e.isIntersecting) Cameras.shown.add(e.target); else Cameras.shown.delete(e.target); }
  }) : null,
  watch(root) {
    for (const img of root.querySelectorAll("img.camera")) if (this.observer) this.observer.observe(img);
  },
  refresh() {
    if (document.hidden || S.tab !== "printers") return;
    for (const img of [...this.shown]) {
      if (!img.isConnected) { this.shown.delete(img); if (this.observer) this.observer.unobserve(img); continue; }
      img.src = cameraSrc(img.dataset.camera);
    }
  },
};
setInterval(() => Cameras.refresh(), CAMERA_MS);

// ---------------------------------------------------------------- overview

// The words of each state a card shows, in the overview's order.
const STATE_WORDS = [["printing", "printing"], ["paused", "paused"], ["idle", "idle"],
  ["bed_to_clear", "bed to clear"], ["finished", "finished"], ["error", "error"],
  ["offline", "offline"], ["unknown", "not reported yet"], ["not_driven", "not driven"]];
const OVERVIEW_MS = 2000;  // at most one overview read per this period

// Show the grid filtered by state (and group): what a count or a tile was clicked for.
function filterGrid({ state = "", group = null, q = null }) {
  const form = $("#printer-filter");
  form.elements.state.value = state;
  if (group !== null) form.elements.group.value = group;
  if (q !== null) form.elements.q.value = q;
  resetPaging(S.printers);
  loadPrinters();
}

// Rename a printer group (every printer of it at once); a name in use merges the groups.
async function renameGroup(group) {
  const to = await ask(`New name of group ${group.group} (${group.printers} printer${group.printers === 1 ? "" : "s"}):`,
    { input: "Group name", value: group.group, yes: "Rename" });
  if (!to || to === group.group) return;
  await attempt(async () => {
    await api("POST", "/groups/rename", { json: { group: group.group, to } });
    loadPrinters(); Overview.schedule();
  }, `Group ${group.group} is now ${to}.`);
}

// Take every printer of a group out of it (the printers stay).
async function ungroup(group) {
  if (!await ask(`Take the ${group.printers} printer${group.printers === 1 ? "" : "s"} of group ${group.group} out of it? The printers stay.`,
    { yes: "Ungroup", no: "Keep it" })) return;
  await attempt(async () => {
    await api("POST", "/groups/rename", { json: { group: group.group, to: null } });
    loadPrinters(); Overview.schedule();
  }, `Group ${group.group} is dissolved; its printers have no group.`);
}

const loadOverview = serial(async () => {
  const { data } = await api("GET", "/dashboard/overview");
  const current = printerParams().state;
  const count = (state, label, n) => h("button", { type: "button", class: "outline small",
    dataset: { state }, "aria-pressed": String(current === state),
    onclick: () => filterGrid({ state, group: "" }) }, `${label} ${n}`);
  $("#overview-total").textContent = `${data.printers} printer${data.printers === 1 ? "" : "s"}`;
  // Counts and groups are redrawn only when they changed (a re-read every 2 s otherwise
  // restyles them for nothing).
  const drawn = JSON.stringify([current, data.needs_attention, data.states, data.groups, staff()]);
  if (drawn !== S.overviewDrawn) {
    S.overviewDrawn = drawn;
    drawCountsAndGroups(data, current, count);
  }
  drawTiles(data.tiles);
});

function drawCountsAndGroups(data, current, count) {
  $("#overview-counts").replaceChildren(
    count("attention", "needs attention", data.needs_attention),
    ...STATE_WORDS.filter(([state]) => data.states[state] > 0)
      .map(([state, words]) => count(state, words, data.states[state])));
  fillTable($("#group-table"), ["Group", "Printers", ...STATE_WORDS.map(([, words]) => words), ...(staff() ? ["Actions"] : [])],
    data.groups.map((g) => h("tr", { dataset: { group: g.group } }, h("td", {}, g.group), h("td", {}, g.printers),
      STATE_WORDS.map(([state]) => h("td", {}, g.states[state] ? h("a", { href: "#printers",
        onclick: (event) => { event.preventDefault(); filterGrid({ state, group: g.group }); } },
        g.states[state]) : "")),
      staff() ? h("td", {}, h("div", { class: "actions" },
        h("button", { type: "button", class: "outline small", "aria-label": `Rename group ${g.group}`,
          onclick: (event) => busyWhile(event.currentTarget, () => renameGroup(g)) }, "Rename"),
        h("button", { type: "button", class: "outline secondary small", "aria-label": `Ungroup ${g.group}`,
          onclick: (event) => busyWhile(event.currentTarget, () => ungroup(g)) }, "Ungroup"))) : null)),
    "No groups.");
}

// The density view, changed in place: a tile's element is kept and only what changed is
// set, so a re-read of 1,000 printers restyles the few that changed, not all of them.
function drawTiles(tiles) {
  const box = $("#tiles");
  const old = new Map([...box.children].map((el) => [el.dataset.id, el]));
  let before = box.firstChild;
  for (const t of tiles) {
    const words = (STATE_WORDS.find(([state]) => state === t.state) || [t.state, t.state])[1];
    const left = t.state === "printing" && typeof t.time_left === "number" ? ` · ${fmtDuration(t.time_left)} left` : "";
    const since = t.since ? ` · since ${fmtTime(t.since)}` : "";
    const label = `${t.id}${t.group ? ` (${t.group})` : ""}: ${words}${left}${since}`;
    let el = old.get(t.id);
    if (el) {
      old.delete(t.id);
      if (el.title !== label) { el.title = label; el.setAttribute("aria-label", label); }
      if (el.dataset.state !== t.state) el.dataset.state = t.state;
      if (el.dataset.attention !== String(t.attention)) el.dataset.attention = String(t.attention);
    } else {
      el = h("button", { type: "button", class: "tile", title: label, "aria-label": label,
        dataset: { id: t.id, state: t.state, attention: String(t.attention) },
        onclick: () => filterGrid({ state: "", group: "", q: t.id }) });
    }
    if (el !== before) box.insertBefore(el, before);
    else before = before.nextSibling;
  }
  for (const el of old.values()) el.remove();
}

// Printers changed: read the overview again, at most once per OVERVIEW_MS.
const Overview = {
  timer: null, last: 0,
  schedule() {
    if (this.timer || S.tab !== "printers" || !$("#overview").open) return;
    const wait = Math.max(0, this.last + OVERVIEW_MS - Date.now());
    this.timer = setTimeout(() => { this.timer = null; this.last = Date.now(); loadOverview(); }, wait);
  },
};

const loadPrinters = serial(async () => {
  const p = S.printers;
  const { data, response } = await api("GET", "/dashboard/printers",
    { params: { ...printerParams(), cursor: p.cursors[p.page] } });
  p.next = response.headers.get("X-Next-Cursor");
  renderGrid(data);
  const pager = $('.pager[data-for="printers"]');
  $('[data-page="prev"]', pager).disabled = p.page === 0;
  $('[data-page="next"]', pager).disabled = !p.next;
  $(".page-label", pager).textContent = `page ${p.page + 1} · ${data.length} printer${data.length === 1 ? "" : "s"}`;
});

// ---------------------------------------------------------------- keeping focus and clicks

const FOCUSABLE = "button, input, select, a[href], img.camera";

// Where focus is inside a card: the card's id, the control's words and its place among the
// card's controls, so that the same control (or the one in its place) gets it back.
function focusInCard() {
  const active = document.activeElement;
  const card = active && active.closest ? active.closest(".card") : null;
  if (!card) return null;
  const controls = [...card.querySelectorAll(FOCUSABLE)];
  return { id: card.dataset.id, label: active.getAttribute("aria-label") || active.textContent,
    index: controls.indexOf(active) };
}

function restoreFocus(where) {
  if (!where) return;
  const card = S.printers.els.get(where.id);
  if (!card) return;
  const controls = [...card.querySelectorAll(FOCUSABLE)];
  const same = controls.find((el) => (el.getAttribute("aria-label") || el.textContent) === where.label);
  const target = same || controls[Math.min(where.index, controls.length - 1)];
  if (target) target.focus({ preventScroll: true });
}

// A card being clicked (a pointer pressed in it) is not replaced until the pointer is up:
// replacing it between press and release would lose the click.
const Pressed = {
  card: null,
  waiting: new Set(),
  start() {
    document.addEventListener("pointerdown", (e) => {
      const card = e.target.closest && e.target.closest(".card");
      this.card = card ? card.dataset.id : null;
    }, true);
    const release = () => {
      this.card = null;
      if (this.waiting.size) {
        const ids = new Set(this.waiting);
        this.waiting.clear();
        setTimeout(() => attempt(() => refreshCards(ids)), 0);  // after the click is handled
      }
    };
    document.addEventListener("pointerup", release, true);
    document.addEventListener("pointercancel", release, true);
  },
};

function renderGrid(cards) {
  const focus = focusInCard();
  const p = S.printers;
  p.cards.clear(); p.els.clear();
  const els = cards.map((card) => {
    const el = cardEl(card);
    p.cards.set(card.id, card); p.els.set(card.id, el);
    return el;
  });
  $("#printer-grid").replaceChildren(...els);
  Cameras.watch($("#printer-grid"));
  restoreFocus(focus);
  Live.retune();
  if (!cards.length) $("#printer-grid").append(h("p", {}, "No printers match."));
  noteGroups(cards);
}

function noteGroups(cards) {
  let added = false;
  for (const card of cards) {
    if (card.group && !S.groups.has(card.group)) { S.groups.add(card.group); added = true; }
  }
  if (added) $("#groups").replaceChildren(...[...S.groups].sort().map((g) => h("option", { value: g })));
}

// Re-read only the given printers (those on the page), in one request per MAX_IDS.
async function refreshCards(ids) {
  const p = S.printers;
  const shown = [...ids].filter((id) => p.cards.has(id));
  for (let i = 0; i < shown.length; i += MAX_IDS) {
    const chunk = shown.slice(i, i + MAX_IDS);
    const { data } = await api("GET", "/dashboard/printers", { params: { id: chunk, limit: MAX_IDS } });
    const seen = new Set();
    for (const card of data) {
      seen.add(card.id);
      const old = p.els.get(card.id);
      if (!old) continue;
      if (Pressed.card === card.id) { Pressed.waiting.add(card.id); continue; }
      const focus = focusInCard();
      const el = cardEl(card);
      old.replaceWith(el);
      Cameras.watch(el);
      p.cards.set(card.id, card); p.els.set(card.id, el);
      if (focus && focus.id === card.id) restoreFocus(focus);
    }
    for (const id of chunk) {
      if (!seen.has(id)) { p.els.get(id)?.remove(); p.els.delete(id); p.cards.delete(id); }
    }
    noteGroups(data);
  }
}

function cardEl(card) {
  const st = card.status || { state: "unknown" };
  const active = st.state === "printing" || st.state === "paused";
  const job = card.job;
  const spool = card.spool;
  const rows = [
    h("div", { class: "row" }, h("span", {}, "Nozzle"), h("span", { class: "nozzle" }, fmtTemp(st.nozzle_actual, st.nozzle_target))),
    h("div", { class: "row" }, h("span", {}, "Bed"), h("span", { class: "bed" }, fmtTemp(st.bed_actual, st.bed_target))),
  ];
  if (active || typeof st.progress === "number") {
    const pct = typeof st.progress === "number" ? st.progress : 0;
    rows.push(h("progress", { value: pct.toFixed(1), max: 100 }),
      h("div", { class: "row" }, h("span", { class: "progress-text" }, `${pct.toFixed(0)} %`),
        h("span", { class: "time-left" }, `${fmtDuration(st.time_left)} left`)));
  }
  if (job && job.file_id && !S.noThumbnail.has(job.file_id)) {  // the slicer's picture, if any
    rows.push(h("img", { class: "thumb", alt: "", loading: "lazy", width: 96,
      src: `${API}/files/${encodeURIComponent(job.file_id)}/thumbnail?width=96`,
      onerror: (event) => { S.noThumbnail.add(job.file_id); event.target.remove(); } }));
  }
  if (job) {
    rows.push(h("div", { class: "row job" }, h("span", {}, "Job"),
      h("span", { class: "wrap" }, job.mine === false && !job.id ? "another user's print"
        : `${job.filepath || job.id}${job.owner_name || job.owner_id ? ` · ${job.mine ? "you" : job.owner_name || job.owner_id}` : ""}`)));
  }
  rows.push(h("div", { class: "row" }, h("span", {}, "Spool"),
    h("span", { class: "spool" }, spool ? `${spool.type} ${spool.color} · ${spool.remaining_weight_in_grams} g`
      : card.filament_id ? card.filament_id : "none loaded")));
  if (st.error) rows.push(h("div", { class: "attention" }, st.error));
  if (card.attention) rows.push(h("div", { class: "attention" }, card.attention));
  if (!card.bed_clear) rows.push(h("div", { class: "attention bed-flag" }, "The bed must be cleared"));
  if (card.reserved_by) rows.push(h("div", { class: "meta" }, `Reserved by ${card.reserved_by}`));
  if (card.waiting_since && printerParams().state === "attention") {  // triage: how long
    rows.push(h("div", { class: "meta waiting" },
      `Waiting for ${fmtDuration((Date.now() - new Date(card.waiting_since).getTime()) / 1000)}`));
  }
  if (card.camera_url) {  // fetched through the node: the browser never reaches the printer's network
    rows.push(h("img", { class: "camera", alt: `camera of ${card.id}`, width: 240, loading: "lazy",
      dataset: { camera: card.id }, src: cameraSrc(card.id),
      onerror: (event) => { event.target.replaceWith(h("div", { class: "meta camera-off" }, "Camera: no picture now")); } }));
  }
  const actions = [];
  if (staff()) {
    if (job && job.id && active) {
      const paused = st.state === "paused";
      actions.push(button(paused ? "Resume" : "Pause", "outline small",
        () => jobAction(job.id, paused ? "resume" : "pause", card.id)));
      actions.push(button("Cancel", "outline secondary small", () => cancelJob(job.id, card.id)));
    }
    actions.push(h("button", { type: "button", class: "outline secondary small", "aria-label": `Edit printer ${card.id}`,
      onclick: () => editPrinter(card) }, "Edit"));
    if (!card.bed_clear) {
      actions.push(button("Clear bed", "small", () => attempt(async () => {
        await api("POST", `/printers/${encodeURIComponent(card.id)}/bed_cleared`);
        await refreshShown([card.id]);
      }, `Bed of ${card.id} marked clear.`)));
    }
  }
  // A printer whose bed waits to be cleared is not free: never shown as idle.
  const bedWaits = !card.bed_clear && (st.state === "idle" || st.state === "finished");
  const shown = bedWaits ? "bed_to_clear" : st.state;
  if (S.selected.has(card.id)) S.selected.set(card.id, card);  // bulk actions see it fresh
  const pick = staff() ? h("input", { type: "checkbox", class: "pick", "aria-label": `Select ${card.id}`,
    checked: S.selected.has(card.id), onchange: (event) => select([card], event.target.checked) }) : null;
  return h("article", { class: "card", dataset: { id: card.id, state: shown } },
    h("h4", {}, h("span", {}, pick, card.id), h("span", { class: "state" }, shown.replaceAll("_", " "))),
    h("div", { class: "meta" }, [card.company, card.model].filter(Boolean).join(" ") || "–",
      card.api ? h("span", { class: "kind" }, ` · ${KINDS[card.api] || card.api}`) : "",
      card.group ? ` · ${card.group}` : ""),
    rows,
    actions.length ? h("div", { class: "actions" }, actions) : null);
}

// ---------------------------------------------------------------- managing printers (staff)

const PRINTER_TEXT = ["company", "model", "url", "group", "camera_url"];

function spoolOptions(select, chosen) {
  select.replaceChildren(h("option", { value: "" }, "none"),
    ...S.spools.map((s) => h("option", { value: s.id }, `${s.id} · ${s.type} ${s.color}`)));
  if (chosen && !S.spools.some((s) => s.id === chosen)) select.append(h("option", { value: chosen }, chosen));
  select.value = chosen || "";
}

// The printer form, for a new printer (`card` null) or to change one: only what changed is
// sent; the API key is write-only (typed anew or kept).
async function editPrinter(card) {
  await loadSpools();
  const dialog = $("#printer-dialog");
  const form = $("#printer-form");
  form.reset();
  $("#printer-error").hidden = true;
  $("#printer-dialog-title").textContent = card ? `Printer ${card.id}` : "A new printer";
  form.elements.id.value = card ? card.id : "";
  form.elements.id.disabled = Boolean(card);
  for (const name of PRINTER_TEXT) form.elements[name].value = (card && card[name]) || "";
  form.elements.api.value = (card && card.api) || "";
  form.elements.api_key.placeholder = card && card.has_api_key ? "kept unless you type a new one" : "none";
  spoolOptions($("#printer-spool"), card && card.filament_id);
  form.elements.worker.checked = card ? card.worker : true;
  $("#printer-delete").hidden = !card;
  form.onsubmit = async (event) => {
    event.preventDefault();
    const value = (name) => form.elements[name].value.trim();
    const body = {};
    if (!card) {
      if (value("id")) body.id = value("id");
      for (const name of [...PRINTER_TEXT, "api", "api_key", "filament_id"]) if (value(name)) body[name] = value(name);
      body.worker = form.elements.worker.checked && Boolean(body.api);
    } else {
      for (const name of ["company", "model"]) if (value(name) !== (card[name] || "")) body[name] = value(name);
      for (const name of ["url", "group", "camera_url", "api", "filament_id"]) {
        if ((value(name) || null) !== (card[name] ?? null)) body[name] = value(name) || null;
      }
      if (value("api_key")) body.api_key = value("api_key");
      if (form.elements.worker.checked !== card.worker) body.worker = form.elements.worker.checked;
    }
    try {
      const { data } = card
        ? await api("PATCH", `/printers/${encodeURIComponent(card.id)}`, { json: body })
        : await api("POST", "/printers", { json: body });
      dialog.close();
      showMessage(card ? `Printer ${data.id} saved.` : `Printer ${data.id} added.`, true);
      loadPrinters(); Overview.schedule(); loadSpools();
    } catch (err) {
      $("#printer-error").textContent = plainWords(err);
      $("#printer-error").hidden = false;
    }
  };
  $("#printer-delete").onclick = async () => {
    dialog.close();
    if (!(await ask(`Delete printer ${card.id}? Its jobs stay in the history.`, { yes: "Delete printer", no: "Keep it" }))) return;
    await attempt(async () => {
      await api("DELETE", `/printers/${encodeURIComponent(card.id)}`);
      loadPrinters(); Overview.schedule();
    }, `Printer ${card.id} deleted.`);
  };
  $("#printer-cancel").onclick = () => dialog.close();
  dialog.showModal();
  (card ? form.elements.company : form.elements.id).focus();
}

// ---------------------------------------------------------------- bulk actions (staff)

const BULK = {
  clear: { applies: (c) => !c.bed_clear, what: "printers with a bed to clear", yes: "Clear beds",
    ask: (n) => `Mark the beds of ${n} printer${n === 1 ? "" : "s"} clear?`,
    run: (c) => api("POST", `/printers/${encodeURIComponent(c.id)}/bed_cleared`),
    done: (n) => `Beds of ${n} printer${n === 1 ? "" : "s"} marked clear.` },
  // Pause and resume follow the job's phase, as the server's rules do (a printer's own
  // report may lag behind it or run ahead of it).
  pause: { applies: (c) => c.job && c.job.id && c.job.phase === "printing",
    what: "printing printers", yes: "Pause", ask: (n) => `Pause ${n} print${n === 1 ? "" : "s"}?`,
    run: (c) => api("POST", `/print_jobs/${encodeURIComponent(c.job.id)}/pause`),
    done: (n) => `Asked ${n} printer${n === 1 ? "" : "s"} to pause.` },
  resume: { applies: (c) => c.job && c.job.id && c.job.phase === "paused",
    what: "paused printers", yes: "Resume", ask: (n) => `Resume ${n} print${n === 1 ? "" : "s"}?`,
    run: (c) => api("POST", `/print_jobs/${encodeURIComponent(c.job.id)}/resume`),
    done: (n) => `Asked ${n} printer${n === 1 ? "" : "s"} to resume.` },
  cancel: { applies: (c) => c.job && c.job.id, what: "printers with a print", yes: "Cancel prints",
    ask: (n) => `Cancel ${n} print${n === 1 ? "" : "s"}? This cannot be undone.`,
    run: (c) => api("POST", `/print_jobs/${encodeURIComponent(c.job.id)}/status`, { params: { status: "Canceled" } }),
    done: (n) => `${n} print${n === 1 ? "" : "s"} canceled.` },
  group: { applies: () => true, what: "printers", yes: "Move", input: "Group",
    ask: (n) => `Move ${n} printer${n === 1 ? "" : "s"} to which group?`,
    run: (c, group) => api("PATCH", `/printers/${encodeURIComponent(c.id)}`, { json: { group } }),
    done: (n, group) => `${n} printer${n === 1 ? "" : "s"} moved to group ${group}.` },
};
const BULK_PARALLEL = 8;  // requests at once
const SELECT_MAX = 5000;

function select(cards, on) {
  for (const card of cards) { if (on) S.selected.set(card.id, card); else S.selected.delete(card.id); }
  showSelection();
}

function showSelection() {
  const n = S.selected.size;
  $("#bulk-count").textContent = n ? `${n} printer${n === 1 ? "" : "s"} selected` : "none selected";
  for (const b of document.querySelectorAll("#bulk [data-bulk]")) b.disabled = n === 0;
  for (const box of document.querySelectorAll("#printer-grid input.pick")) {
    box.checked = S.selected.has(box.closest(".card").dataset.id);
  }
}

// Every printer the grid's filter matches (all pages), selected.
const selectMatching = () => attempt(async () => {
  select(await allPages("/dashboard/printers", printerParams(), SELECT_MAX), true);
});

// The selected printers as they are now (in requests of MAX_IDS).
async function freshSelection() {
  const ids = [...S.selected.keys()];
  const cards = [];
  for (let i = 0; i < ids.length; i += MAX_IDS) {
    const { data } = await api("GET", "/dashboard/printers", { params: { id: ids.slice(i, i + MAX_IDS), limit: MAX_IDS } });
    cards.push(...data);
  }
  return cards;
}

async function bulk(kind) {
  const action = BULK[kind];
  const cards = await attempt(freshSelection);
  if (!cards) return;
  for (const card of cards) S.selected.set(card.id, card);
  const targets = cards.filter(action.applies);
  if (!targets.length) {
    showMessage(`None of the ${cards.length} selected printers is one of the ${action.what}.`);
    return;
  }
  const answer = await ask(action.ask(targets.length), { yes: action.yes, input: action.input || null });
  if (!answer) return;
  const failures = [];
  let next = 0;
  const worker = async () => {
    while (next < targets.length) {
      const card = targets[next++];
      try { await action.run(card, answer); } catch (err) { failures.push(`${card.id}: ${plainWords(err)}`); }
    }
  };
  await Promise.all(Array.from({ length: Math.min(BULK_PARALLEL, targets.length) }, worker));
  const ok = targets.length - failures.length;
  showMessage(action.done(ok, answer) + (failures.length
    ? ` ${failures.length} failed: ${failures.slice(0, 3).join("; ")}${failures.length > 3 ? "; …" : ""}` : ""),
  failures.length === 0);
  loadPrinters();
  Overview.schedule();
}

// A button that shows it is busy (and takes no second click) while its action runs.
function button(label, cls, onclick) {
  return h("button", { type: "button", class: cls, onclick: (event) => busyWhile(event.currentTarget, onclick) }, label);
}

async function busyWhile(el, action) {
  if (el.getAttribute("aria-busy") === "true") return undefined;
  el.setAttribute("aria-busy", "true");
  el.disabled = true;
  try { return await action(); } finally { el.removeAttribute("aria-busy"); el.disabled = false; }
}

function jobAction(jobId, action, printerId) {
  return attempt(async () => {
    await api("POST", `/print_jobs/${encodeURIComponent(jobId)}/${action}`);
    if (printerId) await refreshShown([printerId]);
  }, `Asked the printer to ${action} job ${jobId}.`);
}

async function cancelJob(jobId, printerId) {
  if (!(await ask(`Cancel job ${jobId}?`, { yes: "Cancel the job", no: "Keep it" }))) return undefined;
  return attempt(async () => {
    await api("POST", `/print_jobs/${encodeURIComponent(jobId)}/status`, { params: { status: "Canceled" } });
    if (printerId) await refreshShown([printerId]);
    if (S.tab === "jobs") { loadQueue(); loadHistory(); }
  }, `Job ${jobId} canceled.`);
}

// ---------------------------------------------------------------- jobs

const JOB_HEAD = ["Job", "File", "Status", "Waiting for / outcome", "Owner", "Printer", "Spool", "g", "Created", "Actions"];
const HISTORY_HEAD = [...JOB_HEAD.slice(0, -1), "Ended", "Took", "Actions"];
const WAITING_HEAD = ["Position", "Starts about", "Priority", ...JOB_HEAD];

// Move a waiting job in the queue (staff): `place` is {before}, {after} or {priority}.
function moveJob(job, place, done) {
  return attempt(async () => {
    await api("POST", `/print_jobs/${encodeURIComponent(job.id)}/queue`, { json: place });
    loadQueue();
  }, done);
}

async function askPriority(job) {
  const value = await ask(`Priority of job ${job.id}: higher goes first (from -100 to 100; 0 is the default).`,
    { input: "Priority", value: String(job.priority || 0), type: "number", yes: "Set priority" });
  if (value === null) return;
  const priority = Number(value);
  if (!Number.isInteger(priority) || priority < -100 || priority > 100) {
    showMessage("The priority must be a whole number from -100 to 100.");
    return;
  }
  await moveJob(job, { priority }, `Job ${job.id} now has priority ${priority}.`);
}

// One job's row; `history`: with when it ended and how long it took; `queued`: its place in
// the queue ({position, estimated_start, up, down}: the jobs just before and after it).
function jobRow(job, history = false, queued = null) {
  const actions = [];
  const mine = S.me && job.owner_id === S.me.id;
  if (staff() && queued) {
    const up = button("↑", "outline secondary small", () => moveJob(job, { before: queued.up }));
    up.disabled = !queued.up;
    up.setAttribute("aria-label", `Move job ${job.id} up`);
    up.title = "Move up one place";
    const down = button("↓", "outline secondary small", () => moveJob(job, { after: queued.down }));
    down.disabled = !queued.down;
    down.setAttribute("aria-label", `Move job ${job.id} down`);
    down.title = "Move down one place";
    actions.push(up, down, button("Priority", "outline secondary small", () => askPriority(job)));
  }
  if (staff() && job.approval === "pending" && job.status === "Queued") {
    actions.push(button("Approve", "small", () => attempt(async () => {
      await api("POST", `/print_jobs/${encodeURIComponent(job.id)}/approve`);
      loadQueue();
    }, `Job ${job.id} approved.`)));
    actions.push(button("Reject", "outline secondary small", async () => {
      const reason = await ask(`Why is job ${job.id} rejected?`,
        { input: "Reason", value: "rejected by an operator", yes: "Reject" });
      if (!reason) return;
      attempt(async () => {
        await api("POST", `/print_jobs/${encodeURIComponent(job.id)}/reject`, { json: { reason } });
        loadQueue(); loadHistory();
      }, `Job ${job.id} rejected.`);
    }));
  }
  if ((staff() || mine) && (job.status === "Queued" || job.status === "Running")) {
    actions.push(button("Cancel", "outline secondary small", () => cancelJob(job.id, null)));
  }
  if ((staff() || mine) && job.file_id && (job.status === "Done" || job.status === "Canceled")) {
    actions.push(button("Print again", "outline small", () => reprint(job)));
  }
  const waiting = job.ended ? job.ended.message
    : job.approval === "pending" ? "approval" : job.hold ? job.hold.message : job.last_error || "";
  // An ended job says how: a rejected or lost job is not a plain "Canceled".
  const shown = job.ended ? ENDINGS[job.ended.kind] || job.status
    : job.status + (job.phase ? ` (${job.phase})` : "");
  return h("tr", { dataset: { id: job.id, status: job.status, ended: job.ended ? job.ended.kind : "" } },
    queued ? [h("td", { class: "position" }, queued.position),
      h("td", { class: "starts" }, queued.estimated_start ? fmtTime(queued.estimated_start) : "–"),
      h("td", { class: "priority" }, job.priority || 0)] : null,
    h("td", {}, job.id), h("td", { class: "wrap" }, job.filepath),
    h("td", { class: "status" }, shown),
    h("td", { class: "wrap" }, waiting),
    h("td", {}, mine ? "you" : job.owner_id || "–"),
    h("td", {}, job.assigned_printer_id || job.printer_id || "any"),
    h("td", {}, job.filament_id || "–"), h("td", {}, job.print_weight_in_grams),
    h("td", {}, fmtTime(job.created_at)),
    history ? [h("td", { class: "ended-at" }, job.ended ? fmtTime(job.ended.at) : ""),
      h("td", { class: "took" }, job.ended && job.ended.at && job.ended.started_at
        ? fmtDuration((new Date(job.ended.at) - new Date(job.ended.started_at)) / 1000) : "")] : null,
    h("td", {}, h("div", { class: "actions" }, actions)));
}

function fillTable(table, head, rows, empty) {
  $("thead", table).replaceChildren(h("tr", {}, head.map((label) => h("th", {}, label))));
  $("tbody", table).replaceChildren(...rows);
  if (!rows.length) $("tbody", table).append(h("tr", {}, h("td", { colspan: head.length }, empty)));
}

const QUEUE_ROWS = 50;  // jobs per page of each table

// Every printing and every waiting job, page by page; the waiting ones in the order the farm
// sends them in (priority, then age or where an operator placed them), each with its
// position in the whole queue and when it should start.
const loadQueue = serial(async () => {
  for (const [status, state, table] of [["Running", S.running, "#running-table"], ["Queued", S.queued, "#queue-table"]]) {
    const { data, response } = await api("GET", status === "Running" ? "/print_jobs" : "/print_jobs/queue",
      { params: { ...(status === "Running" ? { status } : {}), limit: QUEUE_ROWS, cursor: state.cursors[state.page] } });
    state.next = response.headers.get("X-Next-Cursor");
    const first = state.page * QUEUE_ROWS + 1;
    if (status === "Running") fillTable($(table), JOB_HEAD, data.map((job) => jobRow(job)), "Nothing is printing.");
    else {
      fillTable($(table), WAITING_HEAD, data.map((job, i) => jobRow(job, false, {
        position: job.position, estimated_start: job.estimated_start,
        up: i > 0 ? data[i - 1].id : null, down: i + 1 < data.length ? data[i + 1].id : null,
      })), "Nothing is waiting.");
    }
    const pager = $(`.pager[data-for="${status === "Running" ? "running" : "queued"}"]`);
    $('[data-page="prev"]', pager).disabled = state.page === 0;
    $('[data-page="next"]', pager).disabled = !state.next;
    $(".page-label", pager).textContent = data.length
      ? `${first}–${first + data.length - 1}${state.next ? " of more" : ""}` : "";
  }
});

function historyParams() {
  const form = new FormData($("#job-filter"));
  const since = form.get("since");
  return {
    status: form.get("status"),
    owner_id: staff() ? form.get("owner_id").trim() : "",
    q: form.get("q").trim(),
    created_after: since ? String(Math.floor(Date.now() / 1000 - Number(since))) : "",
  };
}

const loadHistory = serial(async () => {
  const hst = S.history;
  const { data, response } = await api("GET", "/print_jobs",
    { params: { ...historyParams(), order: "newest", limit: 50, cursor: hst.cursors[hst.page] } });
  hst.next = response.headers.get("X-Next-Cursor");
  fillTable($("#history-table"), HISTORY_HEAD, data.map((job) => jobRow(job, true)), "No jobs match.");
  const query = new URLSearchParams(Object.entries(historyParams()).filter(([, v]) => v));
  $("#history-export").href = `${API}/print_jobs/export${query.toString() ? `?${query}` : ""}`;
  const pager = $('.pager[data-for="history"]');
  $('[data-page="prev"]', pager).disabled = hst.page === 0;
  $('[data-page="next"]', pager).disabled = !hst.next;
  $(".page-label", pager).textContent = `page ${hst.page + 1}`;
});

// Say that a job was submitted (`how`: " again" for a reprint), and whether it waits for
// an operator's approval.
function jobSubmitted(job, how = "") {
  showMessage(`Job ${job.id} (${job.filepath}) submitted${how}${job.approval === "pending" ? ": it waits for an operator's approval" : ""}.`, true);
}

// A new job with an ended job's file, spool, printer (if it named one) and weight.
function reprint(job) {
  const body = Object.fromEntries(Object.entries({ file_id: job.file_id, filament_id: job.filament_id,
    printer_id: job.printer_id, filepath: job.filepath, print_weight_in_grams: job.print_weight_in_grams })
    .filter(([, value]) => value !== null && value !== undefined));
  return attempt(async () => {
    const { data } = await api("POST", "/print_jobs", { json: body });
    jobSubmitted(data, " again");
    loadQueue(); loadHistory();
  });
}

async function submitJob(event) {
  event.preventDefault();
  const form = event.target;
  const data = new FormData(form);
  if (!data.get("printer_id")) data.delete("printer_id");
  if (!data.get("print_weight_in_grams")) data.delete("print_weight_in_grams");  // the file's own
  const file = data.get("file");
  if (!file || !file.name) { showMessage("Choose a G-code file to print."); return; }
  if (S.maxUpload && file.size > S.maxUpload) {  // said before sending it all
    showMessage(`${file.name} is ${fmtBytes(file.size)}: this farm takes files up to ${fmtBytes(S.maxUpload)}.`);
    return;
  }
  const submitButton = $("button[type=submit]", form);
  submitButton.disabled = true;
  const bar = $("#upload-progress");
  const shown = (sent, total) => {
    const pct = total ? Math.floor((100 * sent) / total) : 0;
    bar.value = pct;
    bar.dataset.seen = String(Math.max(Number(bar.dataset.seen || 0), pct));
    $("#upload-text").textContent = `Uploading ${file.name}: ${pct} % of ${fmtBytes(total)}`;
  };
  bar.dataset.seen = "0";
  shown(0, file.size);
  bar.hidden = false; $("#upload-text").hidden = false;
  try {
    const job = await attempt(async () => (await apiUpload("/print_jobs", data, shown)).data);
    if (job) {
      jobSubmitted(job);
      form.reset();
      loadMine(); loadQueue(); loadHistory(); loadSpools(); loadFiles();
    }
  } finally {
    submitButton.disabled = false;
    bar.hidden = true; $("#upload-text").hidden = true;
  }
}

// The files the user uploaded (staff: every file), the latest first, under the names they
// gave them, each printable again with the spool chosen in the form.
const loadFiles = serial(async () => {
  const { data } = await api("GET", "/files", { params: { limit: 50 } });
  fillTable($("#file-table"), ["File", "Uploaded", "Size", "Actions"], data.map((f) => h("tr", { dataset: { id: f.id } },
    h("td", { class: "wrap" }, f.name), h("td", {}, fmtTime(f.created_at)), h("td", {}, fmtBytes(f.size)),
    h("td", {}, h("div", { class: "actions" }, h("button", { type: "button", class: "outline small",
      "aria-label": `Print ${f.name}`, onclick: (event) => busyWhile(event.currentTarget, () => printFile(f)) }, "Print"))))),
  "No files yet: a file you submit to print is kept here.");
});

// A job of a stored file: the weight the form says, else the file's own, else asked for.
async function printFile(file) {
  const spool = $("#spool-select").value;
  if (!spool) { showMessage("Choose a spool in the form above first."); return undefined; }
  const body = { file_id: file.id, filepath: file.name, filament_id: spool };
  const typed = $("#job-form").elements.print_weight_in_grams.value;
  if (typed) body.print_weight_in_grams = Number(typed);
  else {
    const { data: meta } = await api("GET", `/files/${encodeURIComponent(file.id)}/metadata`).catch(() => ({ data: {} }));
    if (!meta.weight_grams) {
      const grams = await ask(`${file.name} does not say how much filament it uses. How many grams?`,
        { input: "Weight (g)", type: "number", yes: "Print" });
      if (!grams) return undefined;
      body.print_weight_in_grams = Number(grams);
    }
  }
  return attempt(async () => {
    const { data } = await api("POST", "/print_jobs", { json: body });
    jobSubmitted(data);
    loadMine(); loadQueue(); loadSpools();
  });
}

// ---------------------------------------------------------------- my prints

const MINE_RECENT_S = 24 * 3600;  // ended prints shown this long
const MINE_DAYS = 7;              // jobs created this long ago at most

// My active prints and those that ended in the last day: status, progress, time left and
// the clock time it should finish, the printer and its group, why it waits or ended.
const loadMine = serial(async () => {
  const created = Math.floor(Date.now() / 1000 - MINE_DAYS * 86400);
  const { data } = await api("GET", "/print_jobs", { params: {
    owner_id: S.me.id, order: "newest", limit: 100, created_after: String(created) } });
  const now = Date.now();
  const jobs = data.filter((j) => j.status === "Queued" || j.status === "Running"
    || (j.ended && j.ended.at && now - new Date(j.ended.at).getTime() < MINE_RECENT_S * 1000));
  const on = (j) => j.assigned_printer_id || j.printer_id;
  const printerIds = [...new Set(jobs.filter((j) => j.status === "Running" && on(j)).map(on))];
  const cards = new Map();
  for (let i = 0; i < printerIds.length; i += MAX_IDS) {
    const chunk = printerIds.slice(i, i + MAX_IDS);
    const answer = await api("GET", "/dashboard/printers", { params: { id: chunk, limit: MAX_IDS } });
    for (const card of answer.data) cards.set(card.id, card);
  }
  S.minePrinters = new Set(printerIds);
  Live.retune();
  noticeEndings(jobs);
  const el = $("#mine");
  el.replaceChildren(...jobs.map((job) => mineEl(job, cards.get(on(job)))));
  if (!jobs.length) el.append(h("p", {}, "No prints of yours are waiting, printing or ended today."));
});

function mineEl(job, card) {
  const st = card && card.status;
  const rows = [];
  const shown = job.ended ? ENDINGS[job.ended.kind] || job.status : job.status === "Running"
    ? (job.phase === "paused" ? "Paused" : job.phase === "starting" ? "Starting" : "Printing") : "Waiting";
  rows.push(h("div", { class: "row" }, h("span", { class: "state" }, shown),
    h("span", {}, fmtTime(job.created_at))));
  if (job.status === "Running" && st && typeof st.progress === "number") {
    rows.push(h("progress", { value: st.progress.toFixed(1), max: 100 }));
    const left = typeof st.time_left === "number" ? st.time_left : null;
    const finish = left !== null ? new Date(Date.now() + left * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : null;
    rows.push(h("div", { class: "row" }, h("span", { class: "progress-text" }, `${st.progress.toFixed(0)} %`),
      h("span", { class: "finish" }, left !== null ? `${fmtDuration(left)} left · done about ${finish}` : "")));
  }
  const printer = job.assigned_printer_id || job.printer_id;
  if (printer) {
    const group = card && card.group ? ` (${card.group})` : "";
    rows.push(h("div", { class: "meta where" }, `${job.status === "Queued" ? "For" : "On"} printer ${printer}${group}`));
  }
  const why = job.ended ? job.ended.message : job.hold ? job.hold.message : "";
  if (why) rows.push(h("div", { class: "meta why" }, why));
  return h("article", { class: "mine-job", dataset: { id: job.id, status: job.status } },
    h("h3", {}, job.filepath), rows);
}

// A browser notification (when allowed) for each of my prints that ended since last shown.
function noticeEndings(jobs) {
  const before = S.mine;
  S.mine = new Map(jobs.map((j) => [j.id, j.status]));
  if (!before || localStorage.getItem("mes-notify") !== "on" || !("Notification" in window)
      || Notification.permission !== "granted") return;
  for (const job of jobs) {
    const was = before.get(job.id);
    if (!job.ended || was === undefined || was === job.status) continue;
    const title = job.ended.kind === "done" ? `${job.filepath} is printed` : `${job.filepath} did not print`;
    new Notification(title, { body: job.ended.message, tag: `mes-job-${job.id}` });
  }
}

function showNotifyState() {
  const on = localStorage.getItem("mes-notify") === "on" && "Notification" in window
    && Notification.permission === "granted";
  $("#notify").textContent = on ? "Stop telling me when my prints end" : "Tell me when my prints end";
  $("#notify-state").textContent = !("Notification" in window) ? "This browser cannot show notifications."
    : Notification.permission === "denied" ? "Notifications are blocked for this page in the browser's settings."
      : on ? "A notification comes when a print of yours ends or fails." : "";
}

async function toggleNotify() {
  if (localStorage.getItem("mes-notify") === "on") {
    localStorage.removeItem("mes-notify");
  } else if ("Notification" in window) {
    const answer = Notification.permission === "granted" ? "granted" : await Notification.requestPermission();
    if (answer === "granted") localStorage.setItem("mes-notify", "on");
  }
  showNotifyState();
}

// ---------------------------------------------------------------- spools

const loadSpools = serial(async () => {
  // Every spool (a farm has far fewer spools than printers), 1,000 a request.
  const spools = await allPages("/filaments", {}, 10000);
  S.spools = spools;
  const holders = new Map();  // spool id -> the printers it is loaded in
  if (S.tab === "spools") {
    for (const p of await allPages("/printers", {}, 10000)) {
      if (p.filament_id) holders.set(p.filament_id, [...(holders.get(p.filament_id) || []), p.id]);
    }
  }
  const select = $("#spool-select");
  const chosen = select.value;
  select.replaceChildren(h("option", { value: "" }, "choose a spool"), ...spools.map((s) =>
    h("option", { value: s.id }, `${s.id} · ${s.type} ${s.color} · ${s.remaining_weight_in_grams - s.reserved_weight_in_grams} g free`)));
  select.value = spools.some((s) => s.id === chosen) ? chosen : "";
  fillTable($("#spool-table"), ["Spool", "Type", "Colour", "Total g", "Remaining g", "Reserved g", "Free g", "Level",
    "Loaded in", ...(staff() ? ["Actions"] : [])],
    spools.map((s) => {
      const total = Math.max(1, s.total_weight_in_grams);
      const free = s.remaining_weight_in_grams - s.reserved_weight_in_grams;
      return h("tr", { dataset: { id: s.id } }, h("td", {}, s.id), h("td", {}, s.type), h("td", {}, s.color),
        h("td", {}, s.total_weight_in_grams), h("td", { class: "remaining" }, s.remaining_weight_in_grams),
        h("td", { class: "reserved" }, s.reserved_weight_in_grams), h("td", {}, free),
        h("td", {}, h("span", { class: "bar", title: `${s.remaining_weight_in_grams} of ${total} g left, ${s.reserved_weight_in_grams} g reserved` },
          h("span", { class: "used", style: `width:${(100 * Math.max(0, free) / total).toFixed(1)}%` }),
          h("span", { class: "reserved", style: `left:${(100 * Math.max(0, free) / total).toFixed(1)}%;width:${(100 * s.reserved_weight_in_grams / total).toFixed(1)}%` }))),
        h("td", { class: "holders wrap" }, (holders.get(s.id) || []).join(", ") || "–"),
        staff() ? h("td", {}, h("div", { class: "actions" },
          button("Set remaining", "outline small", () => setRemaining(s)),
          h("button", { type: "button", class: "outline secondary small", "aria-label": `Delete spool ${s.id}`,
            onclick: (event) => busyWhile(event.currentTarget, () => deleteSpool(s)) }, "Delete"))) : null);
    }), "No spools yet.");
});

async function setRemaining(spool) {
  const grams = await ask(`How many grams are left on spool ${spool.id}?`,
    { input: "Remaining (g)", value: String(spool.remaining_weight_in_grams), yes: "Save" });
  if (grams === null) return;
  const value = Number(grams);
  if (!Number.isInteger(value) || value < 0) { showMessage("Remaining must be a whole number of grams, 0 or more."); return; }
  await attempt(async () => {
    await api("PATCH", `/filaments/${encodeURIComponent(spool.id)}`, { json: { remaining_weight_in_grams: value } });
    loadSpools();
  }, `Spool ${spool.id}: ${value} g left.`);
}

// Ask `question`; when confirmed, send `method` to `path`, then `after`, and say `done`.
async function confirmed(question, yes, method, path, after, done) {
  if (!(await ask(question, { yes, no: "Keep it" }))) return;
  await attempt(async () => { await api(method, path); after(); }, done);
}

function deleteSpool(spool) {
  return confirmed(`Delete spool ${spool.id}?`, "Delete spool", "DELETE",
    `/filaments/${encodeURIComponent(spool.id)}`, loadSpools, `Spool ${spool.id} deleted.`);
}

async function addSpool(event) {
  event.preventDefault();
  const form = event.target;
  const data = new FormData(form);
  const body = { type: data.get("type"), color: data.get("color").trim(),
    total_weight_in_grams: Number(data.get("total_weight_in_grams")) };
  if (data.get("id").trim()) body.id = data.get("id").trim();
  if (data.get("remaining_weight_in_grams") !== "") body.remaining_weight_in_grams = Number(data.get("remaining_weight_in_grams"));
  const spool = await attempt(async () => (await api("POST", "/filaments", { json: body })).data);
  if (spool) {
    showMessage(`Spool ${spool.id} added.`, true);
    form.reset();
    loadSpools();
  }
}

// ---------------------------------------------------------------- accounts

// Every page of a list (at most `max` rows).
async function allPages(path, params = {}, max = 5000) {
  const rows = [];
  let cursor = null;
  do {
    const { data, response } = await api("GET", path, { params: { ...params, limit: 1000, cursor } });
    rows.push(...data);
    cursor = response.headers.get("X-Next-Cursor");
  } while (cursor && rows.length < max);
  return rows;
}

const loadAccounts = serial(async () => {
  const tokens = await allPages("/tokens", { user_id: S.me.id });
  fillTable($("#token-table"), ["Token", "Created", "Expires", "Last used", "State", "Actions"],
    tokens.map((t) => h("tr", { dataset: { id: t.id } }, h("td", {}, t.name), h("td", {}, fmtTime(t.created_at)),
      h("td", {}, t.expires_at ? fmtTime(t.expires_at) : "never"), h("td", {}, fmtTime(t.last_used_at)),
      h("td", { class: "token-state" }, t.revoked_at ? "revoked" : "in use"),
      h("td", {}, t.revoked_at ? "" : h("button", { type: "button", class: "outline secondary small",
        "aria-label": `Revoke token ${t.name}`, onclick: (event) => busyWhile(event.currentTarget, () => revokeToken(t)) }, "Revoke")))), "No tokens.");
  if (S.me.role === "admin") {
    const users = await allPages("/users");
    fillTable($("#user-table"), ["User", "Name", "Role", "E-mail", "Password", "State", "Actions"],
      users.map((u) => h("tr", { dataset: { id: u.id } }, h("td", {}, u.id), h("td", {}, u.name),
        h("td", {}, roleSelect(u)), h("td", {}, u.email || "–"), h("td", {}, u.has_password ? "set" : "none"),
        h("td", { class: "user-state" }, u.disabled ? "disabled" : "active"),
        h("td", {}, h("div", { class: "actions" },
          button(u.disabled ? "Enable" : "Disable", "outline small", () => patchUser(u, { disabled: !u.disabled },
            `${u.name} is ${u.disabled ? "enabled" : "disabled"}.`)),
          h("button", { type: "button", class: "outline small", "aria-label": `Set the password of ${u.name}`,
            onclick: (event) => busyWhile(event.currentTarget, () => resetPassword(u)) }, "Set password"),
          h("button", { type: "button", class: "outline small", "aria-label": `New token for ${u.name}`,
            onclick: (event) => busyWhile(event.currentTarget, () => newToken(u)) }, "New token"))))), "No users.");
  }
  if (staff()) {
    const hooks = await allPages("/webhooks");
    const last = await Promise.all(hooks.map((w) => api("GET", `/webhooks/${encodeURIComponent(w.id)}/deliveries`,
      { params: { limit: 1 } }).then(({ data }) => data[0] || null, () => null)));
    fillTable($("#webhook-table"), ["Address", "Sends", "Description", "Created", "Last delivery", "Actions"],
      hooks.map((w, i) => h("tr", { dataset: { id: w.id } }, h("td", { class: "wrap" }, w.url),
        h("td", { class: "wrap" }, w.types.join(", ")), h("td", { class: "wrap" }, w.description || "–"),
        h("td", {}, fmtTime(w.created_at)),
        h("td", {}, last[i] ? `${last[i].status}${last[i].last_status_code ? ` (HTTP ${last[i].last_status_code})` : ""}, ${fmtTime(last[i].created_at)}` : "none yet"),
        h("td", {}, h("div", { class: "actions" }, h("button", {
          type: "button", class: "outline small", "aria-label": `Send a test to ${w.url}`,
          onclick: (event) => busyWhile(event.currentTarget, () => testWebhook(w)) }, "Send a test"))))),
      "No webhooks. Webhooks are added through the REST API (see its documentation).");
  }
});

// Send a webhook a signed test notification now and say what came of it.
function testWebhook(hook) {
  return attempt(async () => {
    const { data } = await api("POST", `/webhooks/${encodeURIComponent(hook.id)}/test`);
    if (data.result === "ok") showMessage(`The test reached ${hook.url} (HTTP ${data.status_code}).`, true);
    else showMessage(`The test did not reach ${hook.url}: ${data.error}.`);
  });
}

function roleSelect(user) {
  const select = h("select", { "aria-label": `Role of ${user.name}`, class: "role" },
    ...["user", "operator", "admin"].map((r) => h("option", { value: r, selected: r === user.role }, r)));
  select.addEventListener("change", () => patchUser(user, { role: select.value }, `${user.name} is now ${select.value}.`));
  return select;
}

function patchUser(user, body, done) {
  return attempt(async () => {
    await api("PATCH", `/users/${encodeURIComponent(user.id)}`, { json: body });
    loadAccounts();
  }, done);
}

async function resetPassword(user) {
  const password = await ask(`A new password for ${user.name} (at least 8 characters):`,
    { input: "New password", yes: "Set password", type: "password" });
  if (password === null) return;
  await patchUser(user, { password }, `The password of ${user.name} is set.`);
}

function tokenShown(token) {
  showMessage(`Token "${token.name}": ${token.token} (copy it now: it is not shown again)`, true);
}

async function newToken(user) {
  const name = await ask(`A name for the new token of ${user.name}:`, { input: "Token name", yes: "Create token" });
  if (name === null) return;
  const token = await attempt(async () => (await api("POST", "/tokens", { json: { name, user_id: user.id } })).data);
  if (token) tokenShown(token);
}

function revokeToken(token) {
  return confirmed(`Revoke token ${token.name}? Programs using it stop working.`, "Revoke", "DELETE",
    `/tokens/${encodeURIComponent(token.id)}`, loadAccounts, `Token ${token.name} revoked.`);
}

async function createOwnToken(event) {
  event.preventDefault();
  const form = event.target;
  const data = new FormData(form);
  const body = { name: data.get("name").trim() };
  if (data.get("expires")) body.expires_in_seconds = Number(data.get("expires"));
  const token = await attempt(async () => (await api("POST", "/tokens", { json: body })).data);
  if (token) { tokenShown(token); form.reset(); loadAccounts(); }
}

async function addUser(event) {
  event.preventDefault();
  const form = event.target;
  const data = new FormData(form);
  const body = { name: data.get("name").trim(), role: data.get("role") };
  if (data.get("email").trim()) body.email = data.get("email").trim();
  if (data.get("password")) body.password = data.get("password");
  const user = await attempt(async () => (await api("POST", "/users", { json: body })).data);
  if (user) { showMessage(`User ${user.name} added (${user.role}).`, true); form.reset(); loadAccounts(); }
}

// ---------------------------------------------------------------- cluster

const loadCluster = serial(async () => {
  const { data } = await api("GET", "/cluster");
  $("#cluster-summary").textContent = `This node ${data.id} is ${data.role}; leader: ${data.leader || "none"} · term ${data.term} · commit ${data.commit_index} · applied ${data.applied_index} · ${data.has_quorum ? "quorum" : "NO quorum"}`;
  const drives = (n) => {  // the printers this node drives (hubs and shards)
    const ids = n.printers || [];
    if (!ids.length) return "none";
    const shown = ids.slice(0, 12).join(", ");
    return ids.length > 12 ? `${ids.length}: ${shown}, …` : `${ids.length}: ${shown}`;
  };
  const lease = (n) => !n.lease ? "–" : (n.lease.expired ? "expired" : "live");
  fillTable($("#cluster-table"), ["Node", "Role", "Reachable", "Lease", "Drives", "REST", "This node"],
    data.nodes.map((n) => h("tr", { dataset: { id: n.id } }, h("td", {}, n.id), h("td", {}, n.role),
      h("td", {}, n.reachable ? "yes" : "no"), h("td", { class: "lease" }, lease(n)),
      h("td", { class: "drives" }, drives(n)),
      h("td", {}, n.http_url ? h("a", { href: `${n.http_url.replace(/\/$/, "")}/`, rel: "noopener" }, n.http_url) : "–"),
      h("td", {}, n.self ? "this node" : ""))), "No nodes.");
  const undriven = data.undriven_printers || [];
  $("#cluster-undriven").textContent = undriven.length
    ? `Not driven now: ${undriven.map((p) => `${p.id} (${p.drive_state}${p.hub ? `, hub ${p.hub}` : ""})`).join(", ")}`
    : "Every printer is driven by a node.";
});

// ---------------------------------------------------------------- utilisation

const UTIL_STATES = [["printing", "#1e88e5"], ["paused", "#fb8c00"], ["idle", "#43a047"], ["offline", "#9e9e9e"], ["error", "#e53935"]];
const UTIL_MAX_ROWS = 200;

function localInput(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

const loadUtilization = serial(async () => {
  const form = $("#util-form");
  let from, to;
  if (form.dataset.edited !== "true") {  // the last 24 hours up to this second
    to = new Date();
    from = new Date(to.getTime() - 24 * 3600 * 1000);
    form.elements.to.value = localInput(to);
    form.elements.from.value = localInput(from);
  } else {
    from = new Date(form.elements.from.value);
    to = new Date(form.elements.to.value);
  }
  const note = $("#util-note");
  const chart = $("#util-chart");
  if (isNaN(from) || isNaN(to)) { note.textContent = "Choose a start and an end."; return; }
  let data;
  try {
    ({ data } = await api("GET", "/utilization", { params: {
      from: from.toISOString(), to: to.toISOString(), group: form.elements.group.value.trim() } }));
  } catch (err) {
    chart.replaceChildren(); $("#util-legend").replaceChildren();
    if (err instanceof ApiError && err.status === 404 && err.code !== "group_not_found") {
      note.textContent = "This server does not offer utilisation reports yet.";
      return;
    }
    throw err;
  }
  renderUtilization(data);
});

function renderUtilization(data) {
  const rows = [...data.printers].sort((a, b) => b.hours.printing - a.hours.printing);
  const shown = rows.slice(0, UTIL_MAX_ROWS);
  const t = data.total;
  $("#util-note").textContent = `${t.printers} printer${t.printers === 1 ? "" : "s"}: ${fmtHours(t.hours.printing)} printing` +
    (t.utilization === null || t.utilization === undefined ? "" : ` (${(100 * t.utilization).toFixed(0)} % of tracked time)`) +
    ` · jobs ${t.jobs.done} done, ${t.jobs.failed} lost by the farm, ${t.jobs.rejected ?? 0} rejected, ${t.jobs.canceled - (t.jobs.rejected ?? 0)} canceled · ${t.filament_grams} g` +
    (rows.length > shown.length ? ` · the ${shown.length} busiest printers shown` : "");
  $("#util-legend").replaceChildren(...UTIL_STATES.map(([name, color]) =>
    h("span", {}, h("i", { style: `background:${color}` }), name)));
  const NS = "http://www.w3.org/2000/svg";
  const svg = (tag, attrs, text) => {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    if (text !== undefined) el.textContent = text;
    return el;
  };
  const rowH = 20, labelW = 140, barW = 480, infoW = 250, width = labelW + barW + infoW;
  const max = Math.max(1e-9, ...shown.map((r) => UTIL_STATES.reduce((sum, [k]) => sum + r.hours[k], 0)));
  const root = svg("svg", { viewBox: `0 0 ${width} ${Math.max(1, shown.length) * rowH + 4}`, role: "img",
    "aria-label": "hours per state per printer" });
  shown.forEach((r, i) => {
    const y = i * rowH + 2;
    root.append(svg("text", { x: 0, y: y + 13 }, r.printer_id + (r.exists ? "" : " (deleted)")));
    let x = labelW;
    for (const [k, color] of UTIL_STATES) {
      const w = (r.hours[k] / max) * barW;
      if (w > 0) {
        const rect = svg("rect", { x, y, width: w, height: rowH - 5, fill: color, "data-state": k });
        rect.append(svg("title", {}, `${r.printer_id}: ${fmtHours(r.hours[k])} ${k}`));
        root.append(rect);
      }
      x += w;
    }
    root.append(svg("text", { x: labelW + barW + 8, y: y + 13 },
      `${fmtHours(r.hours.printing)} · ${r.jobs.done}/${r.jobs.failed}/${r.jobs.rejected ?? 0}/${r.jobs.canceled - (r.jobs.rejected ?? 0)} · ${r.filament_grams} g`));
  });
  $("#util-chart").replaceChildren(shown.length ? root : h("p", {}, "No printers in this report."));
  if (shown.length) $("#util-chart").append(h("p", { class: "meta" }, "per printer: hours printing · jobs done/lost/rejected/canceled · grams"));
}

// ---------------------------------------------------------------- live updates

// Changes arrive from /api/v1/events (EventSource, with the cookie) and are re-read through
// the REST API, at most once per entity per COALESCE_MS. Without the route (404) the page
// polls every POLL_MS; while the stream is down it polls too and reconnects with backoff.
const Live = {
  es: null, mode: "off", backoff: 1000, timer: null, poll: null, stopped: true, lastReload: 0,
  lastId: null, viewing: null,
  pending: new Map(), timers: new Map(), clusterTimer: null, states: new Map(),

  start() {
    this.stopped = false;
    this.backoff = 1000;
    this.open();
    this.clusterTimer = setInterval(() => { if (S.tab === "cluster" && !document.hidden) loadCluster(); }, CLUSTER_POLL_MS);
  },

  stop() {
    this.stopped = true;
    this.lastId = null;
    if (this.es) this.es.close();
    this.es = null;
    clearTimeout(this.timer);
    clearInterval(this.clusterTimer);
    this.stopPolling();
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear(); this.pending.clear();
    this.setMode("off");
  },

  setMode(mode) {
    this.mode = mode;
    const badge = $("#live");
    badge.dataset.mode = mode;
    badge.textContent = { events: "live", polling: `live · polling every ${POLL_MS / 1000} s`,
      retry: "reconnecting · polling", off: "offline" }[mode];
  },

  // What this view shows decides which telemetry it asks for: the printers on the grid's
  // page in full and the others' state changes (the overview), my printing printers on the
  // Jobs tab, none elsewhere.
  view() {
    const query = new URLSearchParams();
    let ids = [];
    if (S.tab === "printers") ids = [...S.printers.cards.keys()];
    else if (S.tab === "jobs") ids = [...S.minePrinters];
    if (ids.length > MAX_IDS) return "";  // too many to name: every printer's telemetry
    for (const id of ids) query.append("printer", id);
    if (S.tab === "printers") query.set("states", "true");
    if (!ids.length && S.tab !== "printers") query.set("telemetry", "false");
    return query.toString();
  },

  // Ask for another view's telemetry: reconnect, resuming after the last event seen.
  retune() {
    if (this.stopped || !this.es || this.view() === this.viewing) return;
    this.es.close();
    this.es = null;
    this.open();
  },

  open() {
    if (this.stopped) return;
    this.viewing = this.view();
    const query = new URLSearchParams(this.viewing);
    if (this.lastId) query.set("after", this.lastId);
    const es = new EventSource(`${API}/events${query.toString() ? `?${query}` : ""}`);
    this.es = es;
    es.onopen = () => {
      this.backoff = 1000;
      hideMessage("network");
      this.setMode("events");
      this.stopPolling();
      refreshTab(S.tab);  // whatever happened while not connected
    };
    const onEvent = (e) => this.onEvent(e);
    es.addEventListener("change", onEvent);
    es.addEventListener("telemetry", onEvent);
    // Where a fresh stream starts: a stream opened later for another view resumes there.
    es.addEventListener("hello", (e) => { if (e.lastEventId) this.lastId = e.lastEventId; });
    es.onmessage = onEvent;
    es.addEventListener("reload", () => {  // the server cannot resume: re-read, reconnect fresh
      es.close();
      this.lastId = null;
      if (this.es === es) this.es = null;
      refreshTab(S.tab);
      const now = Date.now();  // reloads in a row: back off instead of reconnecting at once
      const wait = now - this.lastReload < 5000 ? this.backoff : 0;
      this.lastReload = now;
      this.backoff = wait ? Math.min(this.backoff * 2, 30000) : this.backoff;
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.open(), wait);
    });
    es.onerror = () => {  // a bare EventSource gives up after a 503: decide here instead
      es.close();
      if (this.es === es) this.es = null;
      this.diagnose();
    };
  },

  async diagnose() {
    if (this.stopped) return;
    let status = 0;
    try {
      const ctrl = new AbortController();
      const response = await fetch(`${API}/events?telemetry=false`, { signal: ctrl.signal,
        headers: { Accept: "text/event-stream" }, credentials: "same-origin" });
      status = response.status;
      ctrl.abort();
    } catch (_) { status = 0; }
    if (this.stopped) return;
    if (status === 401) { signedOut("Your session has ended: sign in again."); return; }
    this.startPolling();
    if (status === 404 || status === 405) { this.setMode("polling"); return; }  // no event stream here
    this.setMode("retry");
    const wait = this.backoff * (0.75 + Math.random() / 2);
    this.backoff = Math.min(this.backoff * 2, 30000);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(), wait);
  },

  startPolling() {
    if (this.poll) return;
    this.poll = setInterval(() => {
      if (!document.hidden && S.tab !== "utilization") refreshTab(S.tab);
    }, POLL_MS);
  },

  stopPolling() { clearInterval(this.poll); this.poll = null; },

  onEvent(e) {
    if (e.lastEventId) this.lastId = e.lastEventId;
    let data;
    try { data = JSON.parse(e.data); } catch (_) { return; }
    if (!data || typeof data !== "object") return;
    const entity = data.entity || (e.type === "telemetry" ? "printer_status" : null);
    const id = data.id ?? data.printer_id ?? (data.data && (data.data.id ?? data.data.printer_id));
    if (!entity) return;
    if (entity === "printer" && data.change !== "updated") this.queue("printer_list", "*");
    else this.queue(entity, id);
    // Telemetry says the printer's state: whether it left or joined a filtered page.
    if (entity === "printer_status" && data.data && typeof data.data.state === "string") {
      this.states.set(String(id), data.data.state);
    } else if (entity === "printer" || entity === "printer_status") {
      this.states.delete(String(id));
    }
    if (entity === "print_job" && data.data) {  // the job's printer shows it too
      const printer = data.data.assigned_printer_id || data.data.printer_id;
      if (printer) this.queue("printer_status", printer);
    }
  },

  queue(entity, id) {
    if (!this.pending.has(entity)) this.pending.set(entity, new Set());
    if (id !== undefined && id !== null) this.pending.get(entity).add(String(id));
    if (!this.timers.has(entity)) {
      this.timers.set(entity, setTimeout(() => this.flush(entity),
        entity === "print_job" || entity === "filament" ? JOB_COALESCE_MS : COALESCE_MS));
    }
  },

  flush(entity) {
    this.timers.delete(entity);
    const ids = this.pending.get(entity) || new Set();
    this.pending.delete(entity);
    if (!S.me) return;
    const p = S.printers;
    if (entity === "printer_list") {
      if (S.tab === "printers") { loadPrinters(); Overview.schedule(); }
      return;
    }
    if (entity === "printer" || entity === "printer_status") {
      Overview.schedule();
      if (S.tab === "jobs" && [...ids].some((id) => S.minePrinters.has(id))) loadMine();
      // A printer's own record changed (its bed, its group): not known where it belongs now.
      const states = new Map(entity === "printer" ? []
        : [...ids].filter((id) => this.states.has(id)).map((id) => [id, this.states.get(id)]));
      if (entity === "printer_status") for (const id of ids) this.states.delete(id);
      if (S.tab === "printers") CardRefresh.add(ids, states);
    } else if (entity === "print_job") {
      if (S.tab === "jobs") { loadQueue(); loadHistory(); }
      // My prints: shown on the Jobs tab, and read on any tab while notifications are on.
      if (S.tab === "jobs" || localStorage.getItem("mes-notify") === "on") loadMine();
      if (S.tab === "printers") {
        const cards = [...p.cards.values()].filter((c) => c.job && ids.has(c.job.id)).map((c) => c.id);
        if (cards.length) CardRefresh.add(cards);
      }
    } else if (entity === "filament") {
      if (S.tab === "spools" || S.tab === "jobs") loadSpools();
      if (S.tab === "printers") {
        const cards = [...p.cards.values()].filter((c) => ids.has(c.filament_id)).map((c) => c.id);
        if (cards.length) CardRefresh.add(cards);
      }
    } else if (entity === "node") {
      if (S.tab === "cluster") loadCluster();
    }
  },
};

// ---------------------------------------------------------------- wiring

function pagerWiring(name, state, load) {
  const pager = $(`.pager[data-for="${name}"]`);
  $('[data-page="next"]', pager).addEventListener("click", () => {
    if (!state.next) return;
    state.cursors[state.page + 1] = state.next;
    state.page += 1;
    load();
  });
  $('[data-page="prev"]', pager).addEventListener("click", () => {
    if (state.page === 0) return;
    state.page -= 1;
    load();
  });
}

function resetPaging(state) { state.cursors = [null]; state.page = 0; state.next = null; }

// Light or dark, as chosen on the page (kept in the browser), else as the system says.
function applyTheme(choice) {
  const dark = choice ? choice === "dark" : window.matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = dark ? "dark" : "light";
  $("#theme").setAttribute("aria-pressed", String(dark));
  $("#theme").textContent = dark ? "Light mode" : "Dark mode";
}

document.addEventListener("DOMContentLoaded", async () => {
  Pressed.start();
  applyTheme(localStorage.getItem("mes-theme"));
  $("#theme").addEventListener("click", () => {
    const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    localStorage.setItem("mes-theme", next);
    applyTheme(next);
  });
  $("#password-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    signInWith({ name: f.get("name"), password: f.get("password") }, $("button[type=submit]", e.target));
  });
  $("#token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    signInWith({ token: new FormData(e.target).get("token").trim() }, $("button[type=submit]", e.target));
  });
  $("#sign-out").addEventListener("click", async () => {
    try { await api("DELETE", "/session"); } catch (_) { /* signed out either way */ }
    signedOut("You are signed out.");
  });
  for (const b of document.querySelectorAll(".tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $(".tabs").addEventListener("keydown", (event) => {  // arrows, Home and End move between tabs
    const tabs = [...document.querySelectorAll(".tabs button")].filter((b) => !b.hidden);
    const at = tabs.indexOf(document.activeElement);
    if (at < 0) return;
    const to = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: tabs.length - 1 }[event.key];
    if (to === undefined) return;
    event.preventDefault();
    const next = tabs[(to + tabs.length) % tabs.length];
    showTab(next.dataset.tab);
    next.focus();
  });
  $("#printer-filter").addEventListener("change", () => { resetPaging(S.printers); loadPrinters(); Overview.schedule(); });
  $("#overview").addEventListener("toggle", () => Overview.schedule());
  $("#bulk-all").addEventListener("click", () => selectMatching());
  $("#bulk-none").addEventListener("click", () => select([...S.selected.values()], false));
  for (const b of document.querySelectorAll("#bulk [data-bulk]")) b.addEventListener("click", () => bulk(b.dataset.bulk));
  $("#printer-filter").addEventListener("submit", (e) => { e.preventDefault(); resetPaging(S.printers); loadPrinters(); });
  $("#job-filter").addEventListener("change", () => { resetPaging(S.history); loadHistory(); });
  $("#job-filter").addEventListener("submit", (e) => { e.preventDefault(); resetPaging(S.history); loadHistory(); });
  $("#job-form").addEventListener("submit", submitJob);
  $("#notify").addEventListener("click", toggleNotify);
  $("#add-printer").addEventListener("click", () => editPrinter(null));
  $("#spool-form").addEventListener("submit", addSpool);
  $("#token-new").addEventListener("submit", createOwnToken);
  $("#user-new").addEventListener("submit", addUser);
  $("#util-form").addEventListener("submit", (e) => { e.preventDefault(); loadUtilization(); });
  for (const name of ["from", "to"]) {
    $("#util-form").elements[name].addEventListener("input", () => { $("#util-form").dataset.edited = "true"; });
  }
  pagerWiring("printers", S.printers, loadPrinters);
  pagerWiring("history", S.history, loadHistory);
  pagerWiring("running", S.running, loadQueue);
  pagerWiring("queued", S.queued, loadQueue);
  try {
    const { data } = await api("GET", "/session");
    signedIn(data.user, data.max_upload_bytes);
  } catch (err) {
    signedOut(err instanceof ApiError && err.status !== 401 ? err.message : "");
  }
});
