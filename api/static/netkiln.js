// The netkiln job page: a read-only view of GET /v1/jobs, refreshed every 2 s, and one
// job's detail with its learning curves. Plain browser JavaScript, no build step.
//
// Every request carries `Authorization: Bearer <key>` when a key is known (from the URL
// fragment #key=..., else localStorage), so images and downloads are fetched as blobs and
// shown through object URLs: an <img src> or a plain link cannot send the header.
// Text from the API is only ever inserted with textContent.
"use strict";

(() => {
  const KEY_STORAGE = "netkiln.apiKey";
  const REFRESH_MS = 2000;
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
  const $ = (id) => document.getElementById(id);

  let apiKey = "";
  let selected = null; // id of the job shown in the detail panel
  let detailStatus = null; // its status at the last detail read
  let curvesDrawnAt = null; // "epoch:status" the shown curves were fetched at
  let curvesUrl = null; // object URL of the shown curves
  let timer = null;
  let refreshing = false;
  let refreshAgain = false;
  const rows = new Map(); // job id -> <tr>

  // --- API key --------------------------------------------------------------------------

  function storedKey() {
    try {
      return localStorage.getItem(KEY_STORAGE) || "";
    } catch {
      return "";
    }
  }

  function storeKey(key) {
    try {
      if (key) localStorage.setItem(KEY_STORAGE, key);
      else localStorage.removeItem(KEY_STORAGE);
    } catch {
      // storage disabled: the key lasts for this page only
    }
  }

  /** The key from #key=... (saved, then taken out of the address bar), else the stored one. */
  function initialKey() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    const key = fragment.get("key");
    if (key === null) return storedKey();
    storeKey(key.trim());
    fragment.delete("key");
    const rest = fragment.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
    return key.trim();
  }

  // --- requests -------------------------------------------------------------------------

  class HttpError extends Error {
    constructor(status, detail) {
      super(`${status}: ${detail}`);
      this.status = status;
      this.detail = detail;
    }
  }

  async function api(path) {
    const headers = apiKey ? { Authorization: `Bearer ${apiKey}` } : {};
    const response = await fetch(path, { headers, cache: "no-store" });
    if (!response.ok) {
      let detail = response.statusText;
      try {
        const body = await response.json();
        detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail ?? body);
      } catch {
        // not JSON: keep the status text
      }
      throw new HttpError(response.status, detail);
    }
    return response;
  }

  const jobPath = (id, rest = "") => `v1/jobs/${encodeURIComponent(id)}${rest}`;

  // --- formatting -----------------------------------------------------------------------

  const number = (value) =>
    typeof value === "number" ? String(Number.parseFloat(value.toPrecision(4))) : String(value);

  /** Loss first, then the other training metrics, then their val_ twins; no learning rate. */
  function metricNames(metrics) {
    const rank = (name) => {
      const base = name.startsWith("val_") ? name.slice(4) : name;
      return [name.startsWith("val_") ? 1 : 0, base === "loss" ? 0 : 1, base];
    };
    return Object.keys(metrics || {})
      .filter((name) => name !== "learning_rate")
      .sort((a, b) => {
        const [x, y] = [rank(a), rank(b)];
        return x[0] - y[0] || x[1] - y[1] || x[2].localeCompare(y[2]);
      });
  }

  const formatMetrics = (metrics) =>
    metricNames(metrics)
      .map((name) => `${name} ${number(metrics[name])}`)
      .join("  ·  ") || "—";

  const pad = (n) => String(n).padStart(2, "0");

  function formatTime(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    const now = new Date();
    if (d.toDateString() === now.toDateString()) return time;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
  }

  function formatSeconds(seconds) {
    const s = Math.round(seconds);
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
    return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
  }

  function formatBytes(size) {
    if (size < 1024) return `${size} B`;
    if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KiB`;
    return `${(size / 1024 / 1024).toFixed(1)} MiB`;
  }

  function setBadge(element, status) {
    element.textContent = status;
    element.className = `badge ${status}`;
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // --- notices --------------------------------------------------------------------------

  function notify(text, kind = "error") {
    const notice = $("notice");
    notice.textContent = text;
    notice.className = kind;
    notice.hidden = false;
  }

  function clearNotice() {
    $("notice").hidden = true;
  }

  function explain(error) {
    if (error instanceof HttpError) {
      if (error.status === 401) {
        return apiKey
          ? "The API key was not accepted: enter an API key that is."
          : "This service needs a key: enter an API key above.";
      }
      if (error.status === 403) return `This API key may not read jobs: ${error.detail}`;
      return `The service answered ${error.status}: ${error.detail}`;
    }
    return `Cannot reach the service (${error.message}); retrying.`;
  }

  // --- the job table --------------------------------------------------------------------

  function newRow(id) {
    const tr = document.createElement("tr");
    tr.dataset.jobId = id;
    tr.tabIndex = 0;
    tr.append(
      el("td", "name"),
      el("td", "id"),
      el("td", "kind"),
      el("td", "status"),
      el("td", "epoch num"),
      el("td", "progress"),
      el("td", "metrics"),
      el("td", "created num"),
    );
    tr.cells[3].append(el("span", "badge"));
    const bar = el("progress");
    bar.max = 1;
    tr.cells[5].append(bar, el("span", "pct"));
    tr.addEventListener("click", () => select(id));
    tr.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        select(id);
      }
    });
    return tr;
  }

  function fillRow(tr, job) {
    const [name, id, kind, status, epoch, progress, metrics, created] = tr.cells;
    name.textContent = job.name ?? "(unnamed)";
    name.classList.toggle("unnamed", job.name == null);
    name.title = job.name ?? "";
    id.textContent = job.id.slice(0, 8);
    id.title = job.id;
    kind.textContent = job.kind;
    setBadge(status.firstChild, job.status);
    epoch.textContent = `${job.progress.epoch}/${job.progress.epochs}`;
    const [bar, pct] = progress.children;
    bar.value = job.progress.fraction;
    pct.textContent = `${Math.floor(job.progress.fraction * 100)}%`;
    metrics.textContent = formatMetrics(job.last_metrics);
    created.textContent = formatTime(job.created_at);
    created.title = job.created_at;
    tr.classList.toggle("selected", job.id === selected);
  }

  function renderRows(items) {
    const body = $("rows");
    const seen = new Set();
    for (const job of items) {
      seen.add(job.id);
      let tr = rows.get(job.id);
      if (!tr) {
        tr = newRow(job.id);
        rows.set(job.id, tr);
      }
      fillRow(tr, job);
      body.append(tr); // moves existing rows into the answer's order
    }
    for (const [id, tr] of rows) {
      if (!seen.has(id)) {
        tr.remove();
        rows.delete(id);
      }
    }
    $("empty").hidden = items.length > 0;
  }

  function clearRows() {
    rows.clear();
    $("rows").replaceChildren();
    $("empty").hidden = true;
  }

  // --- the detail panel -----------------------------------------------------------------

  function showCurves(url, note) {
    if (curvesUrl) URL.revokeObjectURL(curvesUrl);
    curvesUrl = url;
    const img = $("d-curves");
    if (url) img.src = url;
    else img.removeAttribute("src");
    img.hidden = !url;
    $("d-curves-note").textContent = note;
  }

  function select(id) {
    selected = id;
    detailStatus = null;
    curvesDrawnAt = null;
    for (const [rowId, tr] of rows) tr.classList.toggle("selected", rowId === id);
    $("d-name").textContent = "";
    $("d-id").textContent = id;
    $("d-facts").replaceChildren();
    $("d-error").hidden = true;
    $("d-downloads").hidden = true;
    $("d-trials").hidden = true;
    showCurves(null, "loading…");
    $("detail").hidden = false;
    document.body.classList.add("with-detail");
    refreshDetail();
  }

  function closeDetail() {
    selected = null;
    showCurves(null, "");
    $("detail").hidden = true;
    document.body.classList.remove("with-detail");
    for (const tr of rows.values()) tr.classList.remove("selected");
  }

  function fact(term, value) {
    $("d-facts").append(el("dt", "", term), el("dd", "", value));
  }

  function renderDetail(job) {
    $("d-name").textContent = job.name ?? "(unnamed)";
    setBadge($("d-status"), job.status);
    $("d-id").textContent = job.id;
    $("d-facts").replaceChildren();
    const p = job.progress;
    let progress = `epoch ${p.epoch}/${p.epochs} · ${Math.floor(p.fraction * 100)}%`;
    if (job.status === "running" && p.steps_per_epoch) {
      progress += ` · batch ${p.batch}/${p.steps_per_epoch}`;
    }
    if (p.eta_seconds != null) progress += ` · ETA ${formatSeconds(p.eta_seconds)}`;
    fact("progress", progress);
    // Why a queued job waits: its place in its queue and a typed reason.
    if (job.queue) {
      const q = job.queue;
      fact("waiting", `${q.reason} · #${q.position} in ${q.queue}: ${q.message}`);
    }
    fact("kind", job.kind);
    fact("created", formatTime(job.created_at));
    if (job.started_at) fact("started", formatTime(job.started_at));
    if (job.finished_at) fact("finished", formatTime(job.finished_at));
    if (job.attempt > 1) fact("attempt", `${job.attempt} of ${job.max_attempts}`);
    if (job.params) fact("parameters", job.params.total.toLocaleString("en-US"));
    const plan = (job.execution || []).at(-1);
    if (plan) fact("devices", `${plan.devices.join(", ")} (${plan.backend}, ${plan.precision})`);
    if (job.last_metrics) fact("last epoch", formatMetrics(job.last_metrics));
    if (job.test_metrics) fact("test", formatMetrics(job.test_metrics));

    $("d-error").hidden = !job.error;
    if (job.error) {
      $("d-error-code").textContent = job.error.code;
      $("d-error-message").textContent = job.error.message;
    }

    // Spec warnings, and outcome warnings (no_better_than_chance, loss_diverged).
    const warnings = job.warnings || [];
    $("d-warnings").replaceChildren(
      ...warnings.map((w) => {
        const item = el("li");
        item.append(el("strong", "", w.code), ` ${w.message}`);
        return item;
      }),
    );
    $("d-warnings").hidden = warnings.length === 0;

    const artifacts = new Map((job.artifacts || []).map((a) => [a.format, a]));
    let anyDownload = false;
    for (const link of $("d-downloads").querySelectorAll("a[data-format]")) {
      const format = link.dataset.format;
      const artifact = artifacts.get(format);
      const show = job.status === "succeeded" && (artifact !== undefined || !job.artifacts);
      link.hidden = !show;
      anyDownload ||= show;
      link.href = jobPath(job.id, `/model?format=${format}`);
      link.dataset.filename = `${job.name || job.id}.${format}`;
      link.textContent = `Download .${format}` + (artifact ? ` (${formatBytes(artifact.size)})` : "");
    }
    $("d-downloads").hidden = !anyDownload;
  }

  async function loadCurves(job) {
    const id = job.id;
    try {
      // A sweep draws its trials (sweep.png); any other job its learning curves.
      const png = job.kind === "sweep" ? "/sweep.png" : "/curves.png";
      const blob = await (await api(jobPath(id, png))).blob();
      if (id === selected) showCurves(URL.createObjectURL(blob), "");
    } catch (error) {
      if (id !== selected) return;
      if (error instanceof HttpError && error.status === 409) {
        showCurves(null, "no epochs yet");
      } else {
        curvesDrawnAt = null; // try again on the next refresh
        showCurves(null, `curves unavailable: ${explain(error)}`);
      }
    }
  }

  async function refreshDetail() {
    const id = selected;
    if (!id || TERMINAL.has(detailStatus)) return; // an ended job no longer changes
    let job;
    try {
      job = await (await api(jobPath(id))).json();
    } catch (error) {
      if (id === selected) $("d-curves-note").textContent = explain(error);
      return;
    }
    if (id !== selected) return;
    detailStatus = job.status;
    renderDetail(job);
    const drawnAt = `${job.progress.epoch}:${job.status}`;
    if (drawnAt !== curvesDrawnAt) {
      curvesDrawnAt = drawnAt;
      await loadCurves(job);
      if (job.kind === "sweep") await loadTrials(job);
    }
  }

  // A sweep's trials, best first; a row opens that trial's job.
  async function loadTrials(job) {
    const id = job.id;
    let table;
    try {
      table = await (await api(jobPath(id, "/trials"))).json();
    } catch (error) {
      if (id === selected) $("d-trials-caption").textContent = explain(error);
      return;
    }
    if (id !== selected) return;
    $("d-trials-metric").textContent = table.metric;
    const direction = table.direction === "min" ? "lowest" : "highest";
    $("d-trials-caption").textContent =
      `${table.trials.length} trials, ${direction} ${table.metric} first` +
      (table.best ? `; best #${table.best} (its model is the sweep's)` : "");
    const body = $("d-trials").querySelector("tbody");
    body.replaceChildren(
      ...table.trials.map((trial) => {
        const tr = el("tr");
        if (trial.number === table.best) tr.classList.add("best");
        const params = Object.entries(trial.params)
          .map(([path, value]) => `${path}=${JSON.stringify(value)}`)
          .join(", ");
        tr.append(
          el("td", "", String(trial.number)),
          el("td", "", trial.state),
          el("td", "", trial.objective == null ? "" : trial.objective.toFixed(4)),
          el("td", "", `${trial.epochs}/${trial.max_epochs ?? "?"}`),
          el("td", "params", params),
        );
        if (trial.job_id) {
          tr.classList.add("link");
          tr.addEventListener("click", () => select(trial.job_id));
        }
        return tr;
      }),
    );
    $("d-trials").hidden = false;
  }

  async function download(event) {
    const link = event.target.closest("a[data-format]");
    if (!link) return;
    event.preventDefault();
    try {
      const response = await api(link.getAttribute("href"));
      const blob = await response.blob();
      const url = URL.createObjectURL(blob);
      const save = document.createElement("a");
      save.href = url;
      save.download = filenameOf(response) || link.dataset.filename;
      document.body.append(save);
      save.click();
      save.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (error) {
      notify(`Download failed: ${explain(error)}`);
    }
  }

  function filenameOf(response) {
    const header = response.headers.get("content-disposition") || "";
    const encoded = /filename\*=(?:utf-8|UTF-8)''([^;]+)/.exec(header);
    if (encoded) {
      try {
        return decodeURIComponent(encoded[1]);
      } catch {
        // fall through to the plain name
      }
    }
    const plain = /filename="([^"]+)"/.exec(header);
    return plain ? plain[1] : "";
  }

  // --- the refresh loop -----------------------------------------------------------------

  async function refresh() {
    clearTimeout(timer);
    if (refreshing) {
      refreshAgain = true;
      return;
    }
    refreshing = true;
    try {
      const page = await (await api("v1/jobs?limit=50")).json();
      renderRows(page.items);
      clearNotice();
      const more = page.next_cursor ? " · the newest 50 jobs" : "";
      $("updated").textContent = `updated ${formatTime(new Date().toISOString())}${more}`;
      await refreshDetail();
    } catch (error) {
      if (error instanceof HttpError && (error.status === 401 || error.status === 403)) {
        clearRows();
        closeDetail();
        $("key").focus();
      }
      notify(explain(error));
    } finally {
      refreshing = false;
      timer = setTimeout(refresh, refreshAgain ? 0 : REFRESH_MS);
      refreshAgain = false;
    }
  }

  function start() {
    apiKey = initialKey();
    $("key").value = apiKey;
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      apiKey = $("key").value.trim();
      storeKey(apiKey);
      clearRows();
      closeDetail();
      notify(apiKey ? "API key saved." : "API key cleared.", "info");
      refresh();
    });
    $("d-close").addEventListener("click", closeDetail);
    $("d-downloads").addEventListener("click", download);
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && selected) closeDetail();
    });
    refresh();
  }

  start();
})();
