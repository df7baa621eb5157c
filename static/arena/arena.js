// Small behaviours htmx does not cover: theme, copy, keyboard shortcuts, Enter to send.
(function () {
  "use strict";
  var root = document.documentElement;
  var storage = null;
  try { storage = window.localStorage; } catch (e) { /* storage disabled: theme is per page */ }
  var stored = storage && storage.getItem("arena-theme");
  if (stored === "dark" || stored === "light") root.setAttribute("data-theme", stored);

  document.addEventListener("click", function (event) {
    var toggle = event.target.closest("[data-theme-toggle]");
    if (toggle) {
      var dark = root.getAttribute("data-theme") === "dark" ||
        (root.getAttribute("data-theme") === "auto" && matchMedia("(prefers-color-scheme: dark)").matches);
      var next = dark ? "light" : "dark";
      root.setAttribute("data-theme", next);
      if (storage) storage.setItem("arena-theme", next);
      return;
    }
    var swap = event.target.closest("[data-swap-models]");
    if (swap) {
      var fields = swap.form.querySelectorAll("[data-model-field]");
      var first = fields[0].value;
      fields[0].value = fields[1].value;
      fields[1].value = first;
      return;
    }
    if (event.target.closest("[data-toggle-sidebar]")) {
      document.body.classList.toggle("sidebar-open");
      return;
    }
    var copy = event.target.closest(".copy-btn");
    if (copy) {
      var source = copy.dataset.copy === "code"
        ? copy.closest(".code-block").querySelector("pre")
        : copy.closest(".pane").querySelector(".reply-body");
      if (source && navigator.clipboard) {
        navigator.clipboard.writeText(source.innerText).then(function () {
          copy.textContent = "Copied";
          setTimeout(function () { copy.textContent = "Copy"; }, 1500);
        });
      }
    }
  });

  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  }, true);

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (target.matches && target.matches("textarea[data-submit-on-enter]") &&
        event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (target.value.trim()) target.form.requestSubmit();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (target.closest && target.closest("input, textarea, select, [contenteditable]")) return;
    var button = document.querySelector('.vote-form button[data-key="' + event.key + '"]');
    if (button) {
      event.preventDefault();
      button.click();
    }
  });

  // Keep a form from being submitted twice while htmx is busy; free it again if it stays.
  function formButtons(event, disabled) {
    var form = event.target.closest && event.target.closest("form");
    if (form) form.querySelectorAll("button").forEach(function (b) { b.disabled = disabled; });
  }
  document.addEventListener("htmx:beforeRequest", function (event) { formButtons(event, true); });
  document.addEventListener("htmx:afterRequest", function (event) { formButtons(event, false); });

  // A request that got no usable answer: say so next to what the visitor acted on.
  function requestFailed(event, message) {
    var elt = event.detail.elt;
    var anchor = (elt.closest && elt.closest("form")) || elt;
    if (!anchor.isConnected) return;
    var note = anchor.nextElementSibling;
    if (!note || !note.classList.contains("request-error")) {
      note = document.createElement("p");
      note.className = "error request-error";
      note.setAttribute("role", "alert");
      anchor.insertAdjacentElement("afterend", note);
    }
    note.textContent = message;
  }
  // "Updated 12 s ago" keeps counting while the page stays open (the board itself is only
  // swapped when a newer one exists). The server gives the age when it rendered the element.
  function ageText(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 60) return seconds + " s ago";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min ago";
    if (seconds < 86400) return Math.floor(seconds / 3600) + " h ago";
    var days = Math.floor(seconds / 86400);
    return days + (days > 1 ? " days ago" : " day ago");
  }
  setInterval(function () {
    document.querySelectorAll("[data-age]").forEach(function (el) {
      if (!el.ageFrom) el.ageFrom = Date.now() - Number(el.dataset.age) * 1000;
      el.textContent = ageText((Date.now() - el.ageFrom) / 1000);
    });
  }, 1000);

  document.addEventListener("htmx:responseError", function (event) {
    requestFailed(event, "Something went wrong on our side (HTTP " + event.detail.xhr.status +
      "). Please try again in a moment.");
  });
  document.addEventListener("htmx:sendError", function (event) {
    requestFailed(event, "Could not reach the arena. Check your connection and try again.");
  });
})();
