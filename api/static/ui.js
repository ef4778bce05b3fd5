// llome dashboard: refresh live status in place, reload when the data behind the page changed,
// show the first lines of a chosen upload file, confirm destructive buttons. No dependencies.
"use strict";

(function () {
  const POLL_MS = 2000;

  function busy() {
    // Never reload under a user who is choosing a file or looking at an upload preview.
    const file = document.getElementById("u-file");
    const typed = Array.from(document.querySelectorAll("#create-form input:not([type=hidden]), #create-form textarea"))
      .some((el) => el.value !== "");
    return typed || (file && file.files && file.files.length > 0) || document.getElementById("preview") !== null ||
      (document.activeElement && ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName));
  }

  function setText(root, role, text) {
    const el = root.querySelector('[data-role="' + role + '"]');
    if (el && text !== null && text !== undefined) el.textContent = text;
  }

  async function pollCampaign(section) {
    const id = section.dataset.campaign;
    let r;
    try {
      r = await fetch("/ui/campaigns/" + id + "/status.json", { credentials: "same-origin" });
    } catch (e) { return true; }
    if (!r.ok) return true;
    const s = await r.json();
    const changed = s.plot_v !== section.dataset.plotV || (s.batch || "") !== section.dataset.batch ||
      !section.querySelector(".st-" + s.status);
    if (changed && !busy()) { window.location.replace(window.location.pathname); return false; }
    setText(section, "round", s.round);
    setText(section, "phase", s.phase);
    setText(section, "message", s.message);
    if (s.percent !== null) {
      const bar = section.querySelector("progress");
      if (bar) bar.value = s.percent;
      setText(section, "percent", s.percent + "%");
    }
    if (s.eta_s !== null) setText(section, "eta", Math.round(s.eta_s) + " s");
    return !["completed", "failed", "cancelled"].includes(s.status) || changed;
  }

  function startCampaignPolling() {
    const section = document.querySelector("section#status[data-live]");
    if (!section) return;
    const tick = async () => { if (await pollCampaign(section)) setTimeout(tick, POLL_MS); };
    setTimeout(tick, POLL_MS);
  }

  function startListPolling() {
    // The campaigns table: reload while any campaign is running and the user is not typing.
    if (!document.querySelector("#campaigns tr[data-live]")) return;
    setInterval(() => { if (!busy()) window.location.reload(); }, 5 * POLL_MS);
  }

  function peekUpload() {
    const input = document.getElementById("u-file");
    const peek = document.getElementById("u-peek");
    if (!input || !peek) return;
    input.addEventListener("change", () => {
      const f = input.files && input.files[0];
      if (!f) { peek.hidden = true; return; }
      f.slice(0, 4096).text().then((text) => {
        const lines = text.split(/\r?\n/).slice(0, 6);
        peek.textContent = f.name + " (" + f.size + " bytes), first lines:\n" + lines.join("\n");
        peek.hidden = false;
      });
    });
  }

  function confirmForms() {
    document.querySelectorAll("form[data-confirm]").forEach((form) => {
      form.addEventListener("submit", (ev) => { if (!window.confirm(form.dataset.confirm)) ev.preventDefault(); });
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    startCampaignPolling();
    startListPolling();
    peekUpload();
    confirmForms();
  });
})();
