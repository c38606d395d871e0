// The peers table: fetched every 3 s and redrawn in place (no reload); filtered by name and
// sorted by name or activity in the browser.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const page = document.querySelector("main");
  const table = document.getElementById("peers-table");
  const tbody = table.querySelector("tbody");
  const filter = document.getElementById("filter");
  const sort = document.getElementById("sort");
  const count = document.getElementById("peer-count");
  const updated = document.getElementById("updated");
  const empty = document.getElementById("no-peers");
  // drawn at most: a browser redraws a few hundred rows every 3 s without a stutter, not
  // 10,000; the filter finds the others, and the count says what is not shown
  const MAX_ROWS = 500;
  let peers = [];

  // the sort and filter survive a reload of the page, through its address
  const params = new URLSearchParams(window.location.search);
  if (params.get("sort") === "activity") sort.value = "activity";
  filter.value = params.get("filter") || "";

  function remember() {
    const query = new URLSearchParams();
    if (filter.value) query.set("filter", filter.value);
    if (sort.value !== "name") query.set("sort", sort.value);
    const search = query.toString();
    window.history.replaceState(null, "", search ? "?" + search : window.location.pathname);
  }

  function activity(row) {
    return (row.rx_rate_bps || 0) + (row.tx_rate_bps || 0);
  }

  function byActivity(a, b) {
    return (
      activity(b) - activity(a) ||
      Number(b.online) - Number(a.online) ||
      (b.latest_handshake || 0) - (a.latest_handshake || 0) ||
      a.name.localeCompare(b.name)
    );
  }

  function cell(field, content) {
    const td = document.createElement("td");
    td.dataset.field = field;
    td.append(content);
    return td;
  }

  // one address a line: a router's peer has its networks too
  function addressList(addresses) {
    const list = document.createDocumentFragment();
    for (const address of addresses) {
      const line = document.createElement("span");
      line.textContent = address;
      list.append(line);
    }
    return list;
  }

  function rowOf(peer) {
    const tr = document.createElement("tr");
    tr.dataset.name = peer.name;
    const on = trivpn.online(peer);
    const dot = document.createElement("span");
    dot.className = on ? "dot online" : "dot";
    dot.title = on ? "online" : "offline";
    const label = document.createElement("span");
    label.className = "sr-only";
    label.textContent = on ? "online" : "offline";
    const onlineCell = cell("online", dot);
    onlineCell.append(label);
    onlineCell.dataset.online = String(on);
    const link = document.createElement("a");
    link.href = trivpn.peerPath(peer.name);
    link.textContent = peer.name;
    const state = document.createElement("span");
    state.className = "state " + peer.state;
    state.textContent = trivpn.stateLabel(peer.state);
    const stateCell = cell("state", state);
    stateCell.dataset.state = peer.state;
    tr.append(
      onlineCell,
      cell("name", link),
      stateCell,
      cell("latest_handshake", trivpn.ago(peer.latest_handshake)),
      cell("rate_down", trivpn.rate(peer.tx_rate_bps)),
      cell("rate_up", trivpn.rate(peer.rx_rate_bps)),
      cell("usage", trivpn.usageCell(peer)),
      cell("expires", trivpn.expiry(peer.expires)),
      cell("addresses", addressList(peer.addresses)),
    );
    return tr;
  }

  function render() {
    const needle = filter.value.trim().toLowerCase();
    const shown = peers.filter((p) => p.name.toLowerCase().includes(needle));
    shown.sort(sort.value === "activity" ? byActivity : (a, b) => a.name.localeCompare(b.name));
    tbody.replaceChildren(...shown.slice(0, MAX_ROWS).map(rowOf));
    const online = peers.filter(trivpn.online).length;
    const hidden = shown.length > MAX_ROWS ? ` · the first ${MAX_ROWS} of ${shown.length} shown` : "";
    count.textContent = `${peers.length} · ${online} online${hidden}`;
    empty.hidden = peers.length > 0;
  }

  async function refresh() {
    try {
      const answer = await trivpn.api("GET", "/peers");
      peers = answer.peers;
      trivpn.clearErrors(page);
      updated.textContent = "updated " + new Date().toLocaleTimeString();
      render();
    } catch (error) {
      trivpn.showError(page, error);
    }
  }

  filter.addEventListener("input", () => {
    remember();
    render();
  });
  sort.addEventListener("change", () => {
    remember();
    render();
  });
  trivpn.every(3, refresh);
});
