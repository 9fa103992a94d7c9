// Progressive enhancement only: every page works without this file.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Copy buttons: <button data-copy="element-id">. Announced through a live region.
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.hidden = false;
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      const status = document.getElementById(button.dataset.copy + "-status");
      const text = source.value !== undefined ? source.value : source.textContent;
      try {
        await navigator.clipboard.writeText(text.trim());
        if (status) status.textContent = "Copied.";
      } catch (_) {
        source.select && source.select();
        if (status) status.textContent = "Press Ctrl+C (or ⌘C) to copy.";
      }
    });
  }
  // Destructive forms ask first: <form data-confirm="Question?">.
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  // After a failed submit, focus the error summary so screen readers hear it first.
  const errors = document.getElementById("form-errors");
  if (errors) {
    errors.setAttribute("tabindex", "-1");
    errors.focus();
  }
});

// ---- h15b: pages that refresh themselves while open (the activity timeline) ----
// <section id="..." data-refresh="seconds">: the same address is fetched again and the
// section's contents swapped for the fresh ones, while the tab is visible and nobody is
// choosing a filter in it. Same origin only (connect-src 'self'); no inline code.
document.addEventListener("DOMContentLoaded", () => {
  for (const section of document.querySelectorAll("section[id][data-refresh]")) {
    const seconds = Math.max(5, Number(section.dataset.refresh) || 10);
    const refresh = async () => {
      const active = document.activeElement;
      if (document.hidden || (active && section.contains(active) && active.matches("input, select, textarea"))) return;
      try {
        const response = await fetch(window.location.href, { credentials: "same-origin", redirect: "error" });
        if (!response.ok) return;
        const page = new DOMParser().parseFromString(await response.text(), "text/html");
        const fresh = page.getElementById(section.id);
        if (!fresh) return;
        section.replaceChildren(...Array.from(fresh.childNodes, (node) => document.importNode(node, true)));
        section.dataset.refreshedAt = new Date().toISOString();
        if (typeof localTimes === "function") localTimes(section);
      } catch (_) {
        // Offline or logged out: the next tick tries again.
      }
    };
    window.setInterval(refresh, seconds * 1000);
  }
});

// ---- Times in the viewer's own time zone (h15c) --------------------------------------------
// Pages write <time datetime="2026-12-03T04:07:00Z">2026-12-03 04:07 UTC</time>: right without
// JavaScript. Here they are rewritten in the browser's zone and language, keeping the UTC text
// as the tooltip so both can be compared with logs.
function localTimes(root) {
  if (typeof Intl === "undefined" || !Intl.DateTimeFormat) return;
  const format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short",
  });
  for (const time of root.querySelectorAll("time[datetime]:not([data-local])")) {
    const at = new Date(time.getAttribute("datetime"));
    if (Number.isNaN(at.getTime())) continue;
    time.title = time.textContent.trim();
    time.textContent = format.format(at);
    time.dataset.local = "1";
  }
}
document.addEventListener("DOMContentLoaded", () => localTimes(document));
