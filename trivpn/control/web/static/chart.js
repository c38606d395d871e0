// The throughput chart of a peer's page: the last hour as two SVG polylines (down: sent to
// the peer; up: received from it), drawn from GET /api/v1/peers/{name}/traffic.
"use strict";

const throughputChart = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const PAD = { left: 88, right: 8, top: 12, bottom: 24 };
  const SPAN = 3600; // seconds shown

  function element(name, attributes, text) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // a round top for the y axis: 1, 2 or 5 times a power of ten, at least `value`
  function ceiling(value) {
    if (value <= 0) return 1000;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 5, 10]) if (step * power >= value) return step * power;
    return 10 * power;
  }

  // traffic: {interval, samples: [{time, rx_bps, tx_bps}]}; now: the server's epoch seconds
  function draw(container, traffic, now) {
    // drawn at the box's own width, so the labels keep their size on a phone
    const WIDTH = Math.max(320, Math.round(container.clientWidth || 960));
    const HEIGHT = Math.min(260, Math.round(WIDTH * 0.6));
    const samples = (traffic.samples || []).filter((s) => s.time >= now - SPAN && s.time <= now + 60);
    const top = ceiling(Math.max(0, ...samples.map((s) => Math.max(s.rx_bps, s.tx_bps))));
    const innerWidth = WIDTH - PAD.left - PAD.right;
    const innerHeight = HEIGHT - PAD.top - PAD.bottom;
    const x = (time) => PAD.left + innerWidth * (1 - Math.max(0, now - time) / SPAN);
    const y = (bps) => PAD.top + innerHeight * (1 - bps / top);
    const svg = element("svg", {
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      role: "img",
      "aria-label": "throughput over the last hour",
    });
    for (const fraction of [0, 0.5, 1]) {
      const level = y(top * fraction);
      svg.append(element("line", { class: "grid", x1: PAD.left, x2: WIDTH - PAD.right, y1: level, y2: level }));
      if (samples.length === 0) continue; // no scale to speak of
      svg.append(
        element("text", { class: "axis", x: PAD.left - 6, y: level + 4, "text-anchor": "end" }, trivpn.rate(top * fraction)),
      );
    }
    for (const minutes of innerWidth < 400 ? [60, 30, 0] : [60, 45, 30, 15, 0]) {
      const label = minutes ? `−${minutes} min` : "now";
      const anchor = minutes === 60 ? "start" : minutes === 0 ? "end" : "middle";
      svg.append(element("text", { class: "axis", x: x(now - minutes * 60), y: HEIGHT - 6, "text-anchor": anchor }, label));
    }
    for (const [field, way] of [
      ["tx_bps", "down"],
      ["rx_bps", "up"],
    ]) {
      const points = samples.map((s) => `${x(s.time).toFixed(1)},${y(s[field]).toFixed(1)}`);
      svg.append(element("polyline", { class: "line " + way, points: points.join(" ") }));
    }
    if (samples.length === 0) {
      svg.append(element("text", { class: "empty", x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle" }, "no traffic in the last hour"));
    }
    container.replaceChildren(svg);
  }

  return { draw };
})();
