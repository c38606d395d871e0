// The server page: GET /api/v1/status every 5 s.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const page = document.querySelector("main");

  function set(name, text) {
    page.querySelector(`[data-field="${name}"]`).textContent = text;
  }

  // 3 days 4 hours: the two largest units
  function uptime(seconds) {
    const first = trivpn.duration(seconds);
    const sizes = { day: 86400, hour: 3600, minute: 60 };
    const unit = Object.keys(sizes).find((u) => first.includes(` ${u}`));
    const rest = unit ? seconds % sizes[unit] : 0;
    return rest >= 1 && unit !== "minute" ? `${first} ${trivpn.duration(rest)}` : first;
  }

  function fill(status) {
    const wireguard = status.wireguard;
    const toyvpn = status.toyvpn;
    const totals = status.totals || {};
    set("uptime", uptime(status.uptime_seconds));
    set("interface", `${status.interface.name} (MTU ${status.interface.mtu})`);
    set("address", status.interface.address.join(", "));
    set("egress", status.nat.egress + (status.nat.masquerade ? " (masquerade)" : ""));
    set("wireguard_port", wireguard ? String(wireguard.listen_port) : "off");
    set("public_key", wireguard ? wireguard.public_key : "–");
    for (const node of page.querySelectorAll("[data-toyvpn]")) node.hidden = !toyvpn;
    if (toyvpn) {
      set("toyvpn_port", String(toyvpn.listen_port));
      const sessions = toyvpn.session_count ?? toyvpn.sessions.length;
      set("toyvpn_sessions", `${sessions} (pool ${toyvpn.pool.in_use} of ${toyvpn.pool.size} in use)`);
    }
    set("peers", String(totals.peers ?? "–"));
    set("online", String(totals.online ?? "–"));
    set("rx_bytes", trivpn.bytes(totals.rx_bytes));
    set("tx_bytes", trivpn.bytes(totals.tx_bytes));
  }

  trivpn.every(5, async () => {
    try {
      fill(await trivpn.api("GET", "/status"));
      trivpn.clearErrors(page);
    } catch (error) {
      trivpn.showError(page, error);
    }
  });
});
