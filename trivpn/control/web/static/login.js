// The login form: the password first; a second try with the TOTP code when the server
// answers that it needs one.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("login-form");
  const password = document.getElementById("password");
  const totpRow = document.getElementById("totp-row");
  const totp = document.getElementById("totp");
  const button = document.getElementById("login");

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    trivpn.clearErrors(form);
    const body = { password: password.value };
    if (!totpRow.hidden) body.totp = totp.value.trim();
    button.disabled = true;
    try {
      await trivpn.api("POST", "/session", body);
      window.location.assign("/peers");
    } catch (error) {
      if (error instanceof trivpn.ApiError && error.body.totp_required && totpRow.hidden) {
        totpRow.hidden = false;
        totp.focus();
        return;
      }
      if (error instanceof trivpn.ApiError && error.status === 429) {
        trivpn.showError(form, "Too many failed logins: wait a minute and try again.");
      } else {
        trivpn.showError(form, error);
      }
    } finally {
      button.disabled = false;
    }
  });
});
