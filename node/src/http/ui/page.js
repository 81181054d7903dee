// Live updates: the node renders the page's live part itself
// (GET /ui/live), so this only fetches it once a second and swaps it in.
// Without JavaScript the page reloads itself instead (<noscript> refresh).
(function () {
  var live = document.getElementById("live");
  var updates = 0;
  function tick() {
    fetch("ui/live", { cache: "no-store", credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) throw new Error(r.status);
        return r.text();
      })
      .then(function (html) {
        live.innerHTML = html;
        updates += 1;
        document.body.setAttribute("data-updates", String(updates));
        document.body.classList.remove("stale");
      })
      .catch(function () {
        document.body.classList.add("stale");
      })
      .then(function () {
        setTimeout(tick, 1000);
      });
  }
  setTimeout(tick, 1000);
})();
