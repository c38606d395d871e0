// The add form: POST /api/v1/peers, then the config shown this once, with its QR code and a
// download made here from the text (a Blob URL: no second request carries the private key).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("add-form");
  const submit = document.getElementById("add-submit");
  const section = document.getElementById("config");
  const FIELDS = ["name", "expires", "quota", "rate_down", "rate_up"];

  // only what was filled in: an empty field means the default (none, never)
  function body() {
    const answer = {};
    for (const field of FIELDS) {
      const value = form.elements[field].value.trim();
      if (value) answer[field] = value;
    }
    return answer;
  }

  // the server's SVG text as an element: parsed as HTML (inline SVG needs no xmlns there;
  // no script of a parsed document runs), scaled to its box by a viewBox
  function svgOf(text) {
    const svg = new DOMParser().parseFromString(text, "text/html").querySelector("svg");
    if (!svg) return document.createTextNode("(no QR code)");
    const width = svg.getAttribute("width");
    const height = svg.getAttribute("height");
    if (!svg.hasAttribute("viewBox") && width && height) {
      svg.setAttribute("viewBox", `0 0 ${parseFloat(width)} ${parseFloat(height)}`);
    }
    svg.removeAttribute("width");
    svg.removeAttribute("height");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "QR code of the configuration");
    return document.importNode(svg, true);
  }

  function show(answer) {
    const name = answer.peer.name;
    document.getElementById("config-name").textContent = name;
    document.getElementById("config-text").textContent = answer.config;
    document.getElementById("config-qr").replaceChildren(svgOf(answer.qr_svg));
    const download = document.getElementById("config-download");
    if (download.href.startsWith("blob:")) URL.revokeObjectURL(download.href);
    const blob = new Blob([answer.config], { type: "text/plain" });
    download.href = URL.createObjectURL(blob);
    download.download = `${name}.conf`;
    download.textContent = `Download ${name}.conf`;
    document.getElementById("config-peer").href = trivpn.peerPath(name);
    section.hidden = false;
    section.scrollIntoView();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    trivpn.clearErrors(form);
    submit.disabled = true;
    try {
      show(await trivpn.api("POST", "/peers", body()));
      form.reset();
    } catch (error) {
      trivpn.showError(form, error);
    } finally {
      submit.disabled = false;
    }
  });
});
