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

// ---- Times in the viewer's own time zone (h15c) --------------------------------------------
// Pages write <time datetime="2026-12-03T04:07:00Z">2026-12-03 04:07 UTC</time>: right without
// JavaScript. Here they are rewritten in the browser's zone and language, keeping the UTC text
// as the tooltip so both can be compared with logs.
document.addEventListener("DOMContentLoaded", () => {
  if (typeof Intl === "undefined" || !Intl.DateTimeFormat) return;
  const format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short",
  });
  for (const time of document.querySelectorAll("time[datetime]")) {
    const at = new Date(time.getAttribute("datetime"));
    if (Number.isNaN(at.getTime())) continue;
    time.title = time.textContent.trim();
    time.textContent = format.format(at);
    time.dataset.local = "1";
  }
});
