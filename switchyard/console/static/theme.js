// Before the page paints: the theme the person picked last time (else the system's).
(function () {
  var saved = null;
  try { saved = localStorage.getItem("sy-theme"); } catch (e) {}
  if (saved === "light" || saved === "dark") document.documentElement.dataset.theme = saved;
})();
