// Shared by every page: the API call with the session's CSRF token, error display, the
// formats people read, and the logout button. No framework; the CSP allows no inline code.
"use strict";

const trivpn = (() => {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrfToken = meta ? meta.content : "";
  let clockSkew = 0; // server wall clock minus ours, from the Date header, in seconds

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error) || `the server answered ${status}`);
      this.status = status;
      this.field = (body && body.field) || null;
      this.body = body || {};
    }
  }

  // fetch an /api/v1 path; the JSON answer, or null for 204. Throws ApiError; a 401 on a
  // page of a session (it expired, or the server restarted) goes to the login page.
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (csrfToken) headers["X-CSRF-Token"] = csrfToken;
    const init = { method, credentials: "same-origin", headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch("/api/v1" + path, init);
    const date = Date.parse(response.headers.get("Date") || "");
    if (!Number.isNaN(date)) clockSkew = (date - Date.now()) / 1000;
    const text = await response.text();
    let answer = null;
    if (text) {
      try {
        answer = JSON.parse(text);
      } catch (e) {
        answer = { error: `the server answered ${response.status}` };
      }
    }
    if (response.status === 401 && csrfToken) {
      window.location.assign("/login");
    }
    if (!response.ok) throw new ApiError(response.status, answer);
    return answer;
  }

  function now() {
    return Date.now() / 1000 + clockSkew;
  }

  // An error next to its field (an element .error[data-for=field] in `scope`), else in the
  // scope's general .error[data-for=""]; other messages in the scope are cleared.
  function showError(scope, error) {
    clearErrors(scope);
    const message = error instanceof Error ? error.message : String(error);
    const field = error instanceof ApiError ? error.field : null;
    let target = field ? scope.querySelector(`.error[data-for="${CSS.escape(field)}"]`) : null;
    if (!target) target = scope.querySelector('.error[data-for=""]');
    if (target) target.textContent = message;
    const input = field ? scope.querySelector(`[name="${CSS.escape(field)}"]`) : null;
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
  }

  function clearErrors(scope) {
    for (const e of scope.querySelectorAll(".error")) e.textContent = "";
    for (const e of scope.querySelectorAll("[aria-invalid]")) e.removeAttribute("aria-invalid");
  }

  const BYTE_UNITS = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

  // 1.20 GiB, as `trivpn status` prints transfer
  function bytes(count) {
    if (count === null || count === undefined) return "–";
    if (count < 1024) return `${count} B`;
    let value = count;
    for (const unit of BYTE_UNITS) {
      value /= 1024;
      if (value < 1024 || unit === "EiB") return `${value.toFixed(2)} ${unit}`;
    }
    return "";
  }

  // a rate in bits per second as people read it: 12.3 Mbit/s
  function rate(bps) {
    if (bps === null || bps === undefined) return "–";
    const units = [
      [1e9, "Gbit/s"],
      [1e6, "Mbit/s"],
      [1e3, "kbit/s"],
    ];
    for (const [size, unit] of units) {
      // one decimal below 100 of a unit, none when it is 0: 48.3 Mbit/s, 50 Mbit/s, 410 kbit/s
      if (bps >= size) return `${Number((bps / size).toFixed(bps >= size * 100 ? 0 : 1))} ${unit}`;
    }
    return `${Math.round(bps)} bit/s`;
  }

  // The CLI's syntax, which the API reads back (proto/policy.py format_size, format_rate)
  const SIZE_UNITS = [
    ["TiB", 2 ** 40],
    ["TB", 1e12],
    ["GiB", 2 ** 30],
    ["GB", 1e9],
    ["MiB", 2 ** 20],
    ["MB", 1e6],
    ["KiB", 1024],
    ["KB", 1000],
  ];

  function sizeText(count) {
    for (const [unit, size] of SIZE_UNITS) {
      if (count >= size && count % size === 0) return `${count / size}${unit}`;
    }
    return `${count}B`;
  }

  function rateText(bps) {
    if (bps === null || bps === undefined) return "";
    for (const [unit, size] of [
      ["Gbit", 1e9],
      ["Mbit", 1e6],
      ["kbit", 1e3],
    ]) {
      if (bps >= size && bps % size === 0) return `${bps / size}${unit}`;
    }
    return `${bps / 1000}kbit`;
  }

  function quotaText(row) {
    if (row.quota_bytes === null || row.quota_bytes === undefined) return "";
    return `${sizeText(row.quota_bytes)}/${row.quota_period}`;
  }

  // 45 seconds, 2 minutes, 3 hours, 4 days
  function duration(seconds) {
    const steps = [
      [86400, "day"],
      [3600, "hour"],
      [60, "minute"],
      [1, "second"],
    ];
    for (const [size, unit] of steps) {
      if (seconds >= size || size === 1) {
        const n = Math.floor(seconds / size);
        return `${n} ${unit}${n === 1 ? "" : "s"}`;
      }
    }
    return "";
  }

  // "2 minutes ago", "never", against the server's clock
  function ago(epoch) {
    if (epoch === null || epoch === undefined) return "never";
    const age = now() - epoch;
    if (age < -5) return "in the future (clock changed?)";
    if (age < 1) return "now";
    return `${duration(age)} ago`;
  }

  // an ISO 8601 moment in UTC to the minute: 2026-11-02 09:30 UTC
  function moment(iso) {
    const time = Date.parse(iso);
    if (Number.isNaN(time)) return String(iso);
    const text = new Date(time).toISOString();
    return `${text.slice(0, 10)} ${text.slice(11, 16)} UTC`;
  }

  // an expiry: "never", the day alone when it ends that day (as `--expires 2027-01-31` sets)
  function expiry(iso) {
    if (!iso) return "never";
    const text = moment(iso);
    return text.endsWith(" 23:59 UTC") && iso.includes("23:59:59") ? text.slice(0, 10) : text;
  }

  const STATE_LABELS = {
    active: "active",
    disabled: "disabled",
    expired: "expired",
    over_quota: "over quota",
  };

  function stateLabel(state) {
    return STATE_LABELS[state] || String(state);
  }

  // <meter> of the usage against the quota (no style attribute: the CSP forbids them)
  function usageCell(row) {
    const cell = document.createDocumentFragment();
    const text = document.createElement("span");
    if (row.quota_bytes === null || row.quota_bytes === undefined) {
      text.textContent = bytes(row.usage_bytes);
      cell.append(text);
      return cell;
    }
    const bar = document.createElement("meter");
    bar.min = 0;
    bar.max = row.quota_bytes;
    bar.low = row.quota_bytes * 0.8;
    bar.high = row.quota_bytes * 0.95;
    bar.optimum = 0;
    bar.value = Math.min(row.usage_bytes, row.quota_bytes);
    const percent = Math.floor((100 * row.usage_bytes) / row.quota_bytes);
    bar.title = `${percent}% of the ${row.quota_period} quota`;
    // as `trivpn peer list` writes it: 1.20 GiB / 50 GiB month
    const quota = sizeText(row.quota_bytes).replace(/^([0-9]+)/, "$1 ");
    text.textContent = `${bytes(row.usage_bytes)} / ${quota} ${row.quota_period}`;
    cell.append(bar, " ", text);
    return cell;
  }

  function online(row) {
    return Boolean(row.online);
  }

  function peerPath(name) {
    return "/peers/" + encodeURIComponent(name);
  }

  // runs `task` now and `seconds` after each run ends; paused while the tab is hidden, run
  // at once when it shows again. `task` shows its own errors.
  function every(seconds, task) {
    let timer = null;
    let running = false;
    async function run() {
      if (running) return;
      running = true;
      clearTimeout(timer);
      timer = null;
      try {
        await task();
      } finally {
        running = false;
        if (!document.hidden) timer = setTimeout(run, seconds * 1000);
      }
    }
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && timer === null) run();
    });
    run();
  }

  document.addEventListener("DOMContentLoaded", () => {
    const logout = document.getElementById("logout");
    if (logout) {
      logout.addEventListener("click", async () => {
        try {
          await api("DELETE", "/session");
        } finally {
          window.location.assign("/login");
        }
      });
    }
  });

  return {
    api,
    ApiError,
    now,
    showError,
    clearErrors,
    bytes,
    rate,
    rateText,
    quotaText,
    duration,
    ago,
    moment,
    expiry,
    stateLabel,
    usageCell,
    online,
    peerPath,
    every,
  };
})();
