// idgov: a little progressive enhancement. Every page works without it.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  // Dates are shown in the browser's time zone once the server knows it.
  try {
    var tz = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (tz && document.cookie.indexOf("idgov-tz=" + encodeURIComponent(tz)) === -1) {
      document.cookie = "idgov-tz=" + encodeURIComponent(tz) + "; path=/; max-age=31536000; samesite=lax";
    }
  } catch (e) { /* keep the organisation's zone */ }
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest("button[data-set]");
    if (!b) return;
    var form = b.closest("form");
    var value = b.getAttribute("data-set");
    form.querySelectorAll('input[type="radio"][value="' + value + '"]').forEach(function (r) { r.checked = true; });
  });
})();
