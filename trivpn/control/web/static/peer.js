// A peer's page: its details (refreshed every 5 s), its policy edited in place, enable,
// disable, reset usage, remove, and the last hour's throughput chart.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const page = document.getElementById("peer");
  const name = page.dataset.name;
  const path = trivpn.peerPath(name);
  const form = document.getElementById("policy-form");
  const saved = document.getElementById("peer-saved");
  const enable = document.getElementById("peer-enable");
  const disable = document.getElementById("peer-disable");
  const chart = document.getElementById("chart");
  // the policy inputs (API field -> how a row's value reads in the CLI's syntax)
  const POLICY = {
    expires: (row) => row.expires || "never",
    quota: (row) => trivpn.quotaText(row) || "none",
    rate_down: (row) => trivpn.rateText(row.rate_down_bps) || "none",
    rate_up: (row) => trivpn.rateText(row.rate_up_bps) || "none",
  };
  const shown = {}; // what the inputs were last filled with: only a change is sent
  let gone = false;

  function field(key) {
    return page.querySelector(`[data-field="${key}"]`);
  }

  function fill(row) {
    const on = trivpn.online(row);
    const dot = document.getElementById("peer-online");
    dot.className = on ? "dot online" : "dot";
    dot.title = on ? "online" : "offline";
    const state = field("state");
    state.textContent = trivpn.stateLabel(row.state);
    state.className = "state " + row.state;
    state.dataset.state = row.state;
    field("latest_handshake").textContent = trivpn.ago(row.latest_handshake);
    field("endpoint").textContent = row.endpoint || "–";
    field("rates").textContent =
      row.tx_rate_bps === null && row.rx_rate_bps === null
        ? "not measured yet" // the server needs two samples, seconds apart
        : `${trivpn.rate(row.tx_rate_bps)} down, ${trivpn.rate(row.rx_rate_bps)} up`;
    field("usage").replaceChildren(trivpn.usageCell(row));
    field("transfer").textContent = `${trivpn.bytes(row.received)} / ${trivpn.bytes(row.sent)}`;
    field("addresses").textContent = row.addresses.join(", ");
    field("public_key").textContent = row.public_key;
    field("created").textContent = row.created ? trivpn.moment(row.created) : "in the config file";
    enable.hidden = row.enabled;
    disable.hidden = !row.enabled;
    const fixed = row.source === "config";
    document.getElementById("peer-static").hidden = !fixed;
    for (const control of [...form.elements, enable, disable, document.getElementById("peer-remove")]) {
      control.disabled = fixed;
    }
    // an input the operator has changed keeps what they typed
    for (const [key, text] of Object.entries(POLICY)) {
      const input = form.elements[key];
      const value = text(row);
      if (!(key in shown) || input.value === shown[key]) input.value = value;
      shown[key] = value;
    }
  }

  // a page whose peer was removed (here or elsewhere) says so and stops
  function lost() {
    gone = true;
    trivpn.showError(page, `There is no peer ${name} (any more).`);
    for (const control of page.querySelectorAll("button, input")) control.disabled = true;
  }

  async function act(method, suffix, body) {
    trivpn.clearErrors(page);
    try {
      const row = await trivpn.api(method, path + suffix, body);
      if (row) fill(row);
      return true;
    } catch (error) {
      if (error instanceof trivpn.ApiError && error.status === 404) lost();
      else trivpn.showError(page, error);
      return false;
    }
  }

  async function refresh() {
    if (gone) return;
    try {
      fill(await trivpn.api("GET", path));
    } catch (error) {
      if (error instanceof trivpn.ApiError && error.status === 404) lost();
      else trivpn.showError(page, error);
    }
  }

  async function refreshChart() {
    if (gone) return;
    try {
      const traffic = await trivpn.api("GET", path + "/traffic");
      throughputChart.draw(chart, traffic, trivpn.now());
    } catch (error) {
      if (!(error instanceof trivpn.ApiError && error.status === 404)) trivpn.showError(page, error);
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    saved.hidden = true;
    trivpn.clearErrors(page);
    const body = {};
    for (const key of Object.keys(POLICY)) {
      const value = form.elements[key].value.trim();
      if (value !== shown[key]) body[key] = value || null;
    }
    if (Object.keys(body).length === 0) return;
    try {
      const row = await trivpn.api("PATCH", path, body);
      for (const key of Object.keys(POLICY)) shown[key] = form.elements[key].value;
      fill(row); // the saved values as the server reads them back
      saved.hidden = false;
    } catch (error) {
      if (error instanceof trivpn.ApiError && error.status === 404) lost();
      else trivpn.showError(form, error);
    }
  });
  enable.addEventListener("click", () => act("PATCH", "", { enabled: true }));
  disable.addEventListener("click", () => act("PATCH", "", { enabled: false }));
  document.getElementById("peer-reset").addEventListener("click", () => act("POST", "/reset-usage"));
  document.getElementById("peer-remove").addEventListener("click", async () => {
    if (!window.confirm(`Remove ${name}? Its client can no longer connect, and its config cannot be shown again.`)) return;
    if (await act("DELETE", "")) window.location.assign("/peers");
  });
  trivpn.every(5, refresh);
  trivpn.every(10, refreshChart);
});
