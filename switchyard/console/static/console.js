// The console's progressive enhancement: charts, live updates, copy buttons, the playground.
// Every page works without it except the charts, the live feed and the playground.
(function () {
  "use strict";
  var csrf = document.body.dataset.csrf || "";
  var PALETTE = ["#2563eb", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }

  // ---- theme, navigation, small helpers ----------------------------------------------------
  var toggle = $("[data-theme-toggle]");
  if (toggle) toggle.addEventListener("click", function () {
    var dark = document.documentElement.dataset.theme
      ? document.documentElement.dataset.theme === "dark"
      : window.matchMedia("(prefers-color-scheme: dark)").matches;
    var next = dark ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    try { localStorage.setItem("sy-theme", next); } catch (e) {}
    $all(".plot").forEach(function (el) { if (el._redraw) el._redraw(); });
  });
  var navButton = $("[data-toggle-nav]");
  if (navButton) navButton.addEventListener("click", function () { $("[data-nav]").classList.toggle("open"); });
  var orgSwitch = $("[data-org-switch] select");
  if (orgSwitch) orgSwitch.addEventListener("change", function () {
    window.location = orgSwitch.value ? "/console/o/" + encodeURIComponent(orgSwitch.value) : "/console/operator";
  });
  $all("[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (e) { if (!window.confirm(form.dataset.confirm)) e.preventDefault(); });
  });
  $all("[data-print]").forEach(function (b) { b.addEventListener("click", function () { window.print(); }); });
  $all("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var text = $(button.dataset.copy).textContent.trim();
      var done = function () { var s = button.parentNode.querySelector("[data-copied]"); if (s) s.hidden = false; };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(text); done(); });
      } else { fallbackCopy(text); done(); }
    });
  });
  function fallbackCopy(text) {
    var area = document.createElement("textarea");
    area.value = text; document.body.appendChild(area); area.select();
    try { document.execCommand("copy"); } catch (e) {}
    document.body.removeChild(area);
  }

  // ---- charts --------------------------------------------------------------------------------
  function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }
  function fmt(unit, v) {
    if (v == null) return "";
    if (unit === "USD") {
      if (v === 0) return "$0";
      return "$" + (Math.abs(v) >= 1 ? v.toFixed(2) : String(Number(v.toPrecision(2))));
    }
    return Math.abs(v) >= 10000 ? (v / 1000).toFixed(0) + "k" : String(Math.round(v));
  }
  // Whole numbers on count axes: 1, 2, 5, 10, ... (no "0, 0, 1, 1" from fractional steps).
  var COUNT_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 1e7, 1e8, 1e9];
  var MEASURE = { requests: "requests", tokens: "tokens", USD: "spend" };

  function drawChart(el) {
    var spec = JSON.parse(el.dataset.chart);
    var unit = el.dataset.unit;
    var names = Object.keys(spec.series);
    if (!names.length) names = ["all"], spec.series = { all: spec.x.map(function () { return 0; }) };
    el._spec = spec;
    el._redraw = function () {
      el.innerHTML = "";
      var grid = cssVar("--grid"), text = cssVar("--muted");
      var axis = { stroke: text, grid: { stroke: grid }, ticks: { stroke: grid } };
      var opts = {
        width: Math.max(260, el.clientWidth), height: 200,
        series: [{}].concat(names.map(function (n, i) {
          return { label: n, stroke: PALETTE[i % PALETTE.length], fill: PALETTE[i % PALETTE.length] + "22", width: 2,
                   value: function (u, v) { return fmt(unit, v); } };
        })),
        axes: [axis, Object.assign({}, axis, { size: 64, incrs: unit === "USD" ? undefined : COUNT_STEPS,
                                                 values: function (u, vals) { return vals.map(function (v) { return fmt(unit, v); }); } })],
        scales: { y: { range: function (u, min, max) { return [0, Math.max(max, unit === "USD" ? 0.01 : 4) * 1.1]; } } },
        legend: { show: true, live: false },
      };
      var data = [spec.x].concat(names.map(function (n) { return spec.series[n] || spec.x.map(function () { return 0; }); }));
      el._plot = new uPlot(opts, data, el);
    };
    el._names = names;
    el._redraw();
    if (window.ResizeObserver) {
      var width = el.clientWidth;
      new ResizeObserver(function () {
        if (Math.abs(el.clientWidth - width) > 20) { width = el.clientWidth; el._redraw(); }
      }).observe(el);
    }
  }
  var plots = $all(".plot[data-chart]");
  if (window.uPlot) plots.forEach(drawChart);

  // A billed request, added to the last-hour charts where its minute falls.
  function addEvent(el, event) {
    var spec = el._spec, measure = MEASURE[el.dataset.unit];
    var minute = Math.floor(event.created_at / 60) * 60;
    var last = spec.x[spec.x.length - 1];
    while (minute > last) {  // time moved on: the window slides
      last += 60; spec.x.push(last); spec.x.shift();
      Object.keys(spec.series).forEach(function (n) { spec.series[n].push(0); spec.series[n].shift(); });
    }
    var i = spec.x.indexOf(minute);
    if (i < 0) return;
    var name = event.model;
    if (!spec.series[name]) {
      if (spec.series.all && Object.keys(spec.series).length === 1 && spec.series.all.every(function (v) { return !v; })) delete spec.series.all;
      spec.series[name] = spec.x.map(function () { return 0; });
      el._names = Object.keys(spec.series);
    }
    var served = event.status !== "refused" && event.status !== "failed";
    var add = measure === "requests" ? (served ? 1 : 0)
      : measure === "tokens" ? event.input_tokens + event.output_tokens : event.cost_nanos / 1e9;
    spec.series[name][i] += add;
    el.dataset.chart = JSON.stringify(spec);
    el.dataset.updated = String(Number(el.dataset.updated || 0) + 1);
    drawChart(el);
    var empty = el.parentNode.querySelector(".empty"); if (empty) empty.remove();
  }

  var streams = {};
  function listen(url, onEvent) {
    if (!window.EventSource) return;
    if (!streams[url]) {
      streams[url] = { handlers: [], source: new EventSource(url) };
      var badge = $("[data-live-badge]");
      streams[url].source.onopen = function () {
        if (badge) { badge.textContent = "live"; badge.classList.remove("off"); badge.dataset.connected = "1"; }
      };
      streams[url].source.onerror = function () {
        if (badge) { badge.textContent = "reconnecting"; badge.classList.add("off"); badge.dataset.connected = "0"; }
      };
      streams[url].source.onmessage = function (m) {
        var event = JSON.parse(m.data);
        streams[url].handlers.forEach(function (h) { h(event); });
      };
    }
    streams[url].handlers.push(onEvent);
  }
  plots.forEach(function (el) { if (el.dataset.live) listen(el.dataset.live, function (e) { addEvent(el, e); }); });

  // Today's and this month's figures follow the same events.
  $all("[data-live-card]").forEach(function (card) {
    listen(card.dataset.liveCard, function (e) {
      var served = e.status !== "refused" && e.status !== "failed";
      var add = { requests: served ? 1 : 0, errors: served ? 0 : 1, tokens: e.input_tokens + e.output_tokens,
                  spend: e.cost_nanos }[card.dataset.measure];
      var total = Number(card.dataset.value) + add;
      card.dataset.value = String(total);
      $(".figure", card).textContent = card.dataset.measure === "spend" ? fmtMoney(total) : total.toLocaleString();
    });
  });
  function fmtMoney(nanos) {  // as the server renders it: cents from a dollar up, more digits below
    var v = nanos / 1e9;
    if (nanos === 0) return "$0.00";
    if (Math.abs(v) >= 1) return "$" + v.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    return "$" + v.toFixed(9).replace(/0+$/, "").replace(/\.$/, ".00");
  }

  // ---- the operator's live feed ------------------------------------------------------------------
  var feed = $("[data-feed]");
  if (feed) listen(feed.dataset.feed, function (e) {
    var row = document.createElement("tr");
    var cells = [new Date(e.created_at * 1000).toISOString().replace("T", " ").slice(0, 19), e.org_id, e.model, e.deployment,
                 e.status, e.input_tokens.toLocaleString(), e.output_tokens.toLocaleString(), "$" + e.cost_usd,
                 e.latency_ms.toLocaleString(), e.request_id];
    cells.forEach(function (c, i) {
      var td = document.createElement("td"); td.textContent = c; if (i >= 5 && i <= 8) td.className = "num"; row.appendChild(td);
    });
    var body = feed.querySelector("tbody"); body.insertBefore(row, body.firstChild);
    while (body.children.length > 200) body.removeChild(body.lastChild);
    var empty = $("[data-feed-empty]"); if (empty) empty.remove();
  });

  // ---- the playground ----------------------------------------------------------------------------
  var pg = $("[data-playground]");
  if (pg) {
    var key = null, history = [];
    var thread = $("[data-thread]", pg);
    // One short-lived key per tab and organisation, kept for the tab's life (not across tabs).
    var slot = "sy-playground:" + pg.dataset.keyUrl;
    try { key = JSON.parse(sessionStorage.getItem(slot)); } catch (e) { key = null; }
    var getKey = function () {
      if (key && key.expires_at * 1000 > Date.now() + 60000) return Promise.resolve(key.key);
      return fetch(pg.dataset.keyUrl, { method: "POST", headers: { "x-csrf-token": csrf }, credentials: "same-origin" })
        .then(function (r) { if (!r.ok) throw new Error("Could not get a playground key (HTTP " + r.status + ")"); return r.json(); })
        .then(function (k) {
          key = k;
          try { sessionStorage.setItem(slot, JSON.stringify(k)); } catch (e) {}
          return k.key;
        });
    };
    var bubble = function (role, text) {
      var empty = $("[data-empty]", thread); if (empty) empty.remove();
      var div = document.createElement("div"); div.className = "msg " + role;
      var who = document.createElement("div"); who.className = "who-label"; who.textContent = role;
      var body = document.createElement("div"); body.className = "text"; body.textContent = text;
      div.appendChild(who); div.appendChild(body); thread.appendChild(div); return div;
    };
    var readImage = function (input) {
      return new Promise(function (resolve) {
        var file = input.files && input.files[0];
        if (!file) return resolve(null);
        var reader = new FileReader(); reader.onload = function () { resolve(reader.result); }; reader.readAsDataURL(file);
      });
    };
    pg.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var form = new FormData(pg), send = $("[data-send]", pg);
      var text = String(form.get("message") || "").trim();
      if (!text) return;
      send.disabled = true;
      readImage(pg.elements.image).then(function (image) {
        var content = image ? [{ type: "text", text: text }, { type: "image_url", image_url: { url: image } }] : text;
        history.push({ role: "user", content: content });
        bubble("user", text + (image ? " [image]" : ""));
        var answer = bubble("assistant", "…"), out = $(".text", answer);
        var messages = (form.get("system") ? [{ role: "system", content: String(form.get("system")) }] : []).concat(history);
        return getKey().then(function (apiKey) {
          return fetch(pg.dataset.api, {
            method: "POST", headers: { "content-type": "application/json", authorization: "Bearer " + apiKey },
            body: JSON.stringify({ model: form.get("model"), messages: messages, stream: true,
                                   temperature: Number(form.get("temperature")), max_tokens: Number(form.get("max_tokens")) }),
          }).then(function (r) { return streamReply(r, out, apiKey, answer); });
        });
      }).catch(function (e) { bubble("error", String(e.message || e)); })
        .then(function () { send.disabled = false; pg.elements.message.value = ""; pg.elements.image.value = ""; });
    });
    var streamReply = function (response, out, apiKey, answer) {
      var requestId = response.headers.get("x-request-id");
      if (!response.ok) return response.json().then(function (b) { throw new Error(b.error ? b.error.message : "HTTP " + response.status); });
      var reader = response.body.getReader(), decoder = new TextDecoder(), buffer = "", reply = "";
      out.textContent = "";
      var pump = function () {
        return reader.read().then(function (step) {
          if (step.done) return;
          buffer += decoder.decode(step.value, { stream: true });
          var frames = buffer.split("\n\n"); buffer = frames.pop();
          frames.forEach(function (frame) {
            var line = frame.split("\n").filter(function (l) { return l.indexOf("data: ") === 0; }).map(function (l) { return l.slice(6); }).join("");
            if (!line || line === "[DONE]") return;
            var chunk = JSON.parse(line);
            if (chunk.error) throw new Error(chunk.error.message);
            (chunk.choices || []).forEach(function (c) { if (c.delta && c.delta.content) { reply += c.delta.content; out.textContent = reply; } });
          });
          return pump();
        });
      };
      return pump().then(function () {
        history.push({ role: "assistant", content: reply });
        return fetch(pg.dataset.requests + encodeURIComponent(requestId), { headers: { authorization: "Bearer " + apiKey } });
      }).then(function (r) { return r.ok ? r.json() : null; }).then(function (rec) {
        var cost = document.createElement("div"); cost.className = "cost"; cost.dataset.cost = "";
        cost.textContent = rec ? "Cost $" + rec.cost_usd + " · " + rec.usage.input_tokens + " input + " + rec.usage.output_tokens +
          " output tokens · " + rec.latency_ms + " ms · " + rec.deployment : "Cost not available yet";
        answer.appendChild(cost);
      });
    };
  }
})();
