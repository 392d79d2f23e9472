// hailo-ocr page: pick an image, watch the service find and read its lines.
//
// Talks to the service over its websocket /v1/ocr/stream (SPEC.md): one JSON message per
// image, answered by "accepted", "detected" (boxes), "line" (one per recognised line),
// then "done" (full text and timings) or "error". Plain JavaScript, no dependencies.
//
// State is exposed for people and for the browser test as data attributes:
//   body[data-state]       loading | idle | reading | detected | done | error
//   canvas[data-boxes]     boxes drawn on the image
//   #lines[data-count]     lines recognised so far
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const els = {
    body: document.body,
    info: $("service-info"),
    drop: $("drop"),
    file: $("file"),
    language: $("language"),
    again: $("again"),
    tokenForm: $("token-form"),
    token: $("token"),
    status: $("status"),
    error: $("error"),
    canvas: $("canvas"),
    noPreview: $("no-preview"),
    lines: $("lines"),
    lineCount: $("line-count"),
    result: $("result"),
    text: $("text"),
    copy: $("copy"),
    copied: $("copied"),
    timings: $("timings"),
  };

  const TOKEN_KEY = "hailo-ocr-token";
  const MAX_CANVAS_SIDE = 1600; // keeps canvas memory reasonable on phones
  const STREAM_TIMEOUT_MS = 120000;

  const state = {
    token: localStorage.getItem(TOKEN_KEY) || "",
    socket: null,
    socketReady: null, // Promise resolved when the socket is open
    counter: 0,
    current: null, // the request being shown: {id, started, boxes, recognised, timer}
    file: null,
    image: null, // decoded HTMLImageElement or null when the browser cannot show it
    scale: 1,
    highlight: -1,
  };

  // ---------------------------------------------------------------- small helpers
  function setState(s) { els.body.dataset.state = s; }
  function setStatus(text) { els.status.textContent = text; }

  function showError(message) {
    els.error.textContent = message;
    els.error.hidden = false;
    setState("error");
    setStatus("");
  }

  function clearError() { els.error.hidden = true; els.error.textContent = ""; }

  function authHeaders() {
    return state.token ? { Authorization: "Bearer " + state.token } : {};
  }

  // Relative URLs, so the page works when the service is mounted under a path prefix.
  function httpUrl(path) { return new URL(path, window.location.href).toString(); }

  function wsUrl() {
    const url = new URL("v1/ocr/stream", window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    // Browsers cannot set headers on a WebSocket, so the token travels as ?token=.
    if (state.token) url.searchParams.set("token", state.token);
    return url.toString();
  }

  // ---------------------------------------------------------------- start-up
  async function start() {
    wireEvents();
    if (state.token) els.token.value = state.token;
    let health;
    try {
      const res = await fetch(httpUrl("health"), { headers: authHeaders() });
      health = await res.json();
    } catch (e) {
      showError("Cannot reach the service (" + e.message + "). Is it running?");
      return;
    }
    const langs = health.languages_supported || [];
    els.language.innerHTML = "";
    for (const lang of langs) {
      const opt = document.createElement("option");
      opt.value = lang;
      opt.textContent = languageName(lang);
      els.language.appendChild(opt);
    }
    if (langs.includes("en")) els.language.value = "en";
    els.language.disabled = langs.length === 0;
    const device = health.hailo_device ? " on " + health.hailo_device : "";
    els.info.textContent = (health.backend || "?") + device +
      (health.models_loaded === false ? " — models loading" : "");
    await checkAuth();
  }

  function languageName(code) {
    try {
      const name = new Intl.DisplayNames([navigator.language || "en"], { type: "language" })
        .of(code);
      return name && name !== code ? name + " (" + code + ")" : code;
    } catch (e) {
      return code;
    }
  }

  // /health is open to everyone; /models is not when a token is configured, so asking
  // for it tells us whether to show the token field.
  async function checkAuth() {
    try {
      const res = await fetch(httpUrl("models"), { headers: authHeaders() });
      if (res.status === 401 || res.status === 403) {
        els.tokenForm.hidden = false;
        setState("idle");
        if (state.token) {
          showError("The access token was not accepted. Enter the service's token.");
        } else {
          setStatus("This service needs an access token: enter it below.");
        }
        return false;
      }
    } catch (e) {
      // Not fatal: the stream will report its own error.
    }
    setState("idle");
    setStatus("Choose or drop an image.");
    return true;
  }

  // ---------------------------------------------------------------- user input
  function wireEvents() {
    els.file.addEventListener("change", () => {
      if (els.file.files && els.file.files[0]) useFile(els.file.files[0]);
    });
    for (const name of ["dragenter", "dragover"]) {
      els.drop.addEventListener(name, (ev) => { ev.preventDefault(); els.drop.classList.add("over"); });
    }
    for (const name of ["dragleave", "drop"]) {
      els.drop.addEventListener(name, () => els.drop.classList.remove("over"));
    }
    els.drop.addEventListener("drop", (ev) => {
      ev.preventDefault();
      const f = ev.dataTransfer && ev.dataTransfer.files && ev.dataTransfer.files[0];
      if (f) useFile(f);
    });
    // Dropping outside the drop zone must not navigate away from the page.
    window.addEventListener("dragover", (ev) => ev.preventDefault());
    window.addEventListener("drop", (ev) => ev.preventDefault());
    window.addEventListener("paste", (ev) => {
      const items = (ev.clipboardData && ev.clipboardData.files) || [];
      if (items[0]) useFile(items[0]);
    });
    els.language.addEventListener("change", () => { if (state.file) read(); });
    els.again.addEventListener("click", () => { if (state.file) read(); });
    els.tokenForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      state.token = els.token.value.trim();
      if (state.token) localStorage.setItem(TOKEN_KEY, state.token);
      else localStorage.removeItem(TOKEN_KEY);
      closeSocket();
      clearError();
      if (await checkAuth()) {
        els.tokenForm.hidden = true;
        if (state.file) read();
      }
    });
    els.copy.addEventListener("click", copyText);
    els.lines.addEventListener("mouseover", (ev) => highlightFrom(ev.target));
    els.lines.addEventListener("focusin", (ev) => highlightFrom(ev.target));
    els.lines.addEventListener("mouseleave", () => { state.highlight = -1; markHighlight(); redraw(); });
  }

  function highlightFrom(target) {
    const li = target && target.closest ? target.closest("li") : null;
    const idx = li ? Number(li.dataset.index) : -1;
    if (idx !== state.highlight) {
      state.highlight = idx;
      markHighlight();
      redraw();
    }
  }

  function markHighlight() {
    for (const li of els.lines.children) {
      li.classList.toggle("hl", Number(li.dataset.index) === state.highlight);
    }
  }

  async function useFile(file) {
    state.file = file;
    els.again.disabled = false;
    state.image = await loadPreview(file);
    els.noPreview.hidden = state.image !== null;
    read();
  }

  function loadPreview(file) {
    return new Promise((resolve) => {
      const url = URL.createObjectURL(file);
      const img = new Image();
      img.onload = () => resolve(img); // the object URL stays alive while the image is shown
      img.onerror = () => { URL.revokeObjectURL(url); resolve(null); };
      img.src = url;
    });
  }

  function readAsDataUrl(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error || new Error("the file could not be read"));
      reader.readAsDataURL(file);
    });
  }

  // ---------------------------------------------------------------- the websocket
  function closeSocket() {
    if (state.socket) {
      try { state.socket.close(); } catch (e) { /* already closed */ }
    }
    state.socket = null;
    state.socketReady = null;
  }

  function openSocket() {
    if (state.socket && state.socket.readyState <= WebSocket.OPEN && state.socketReady) {
      return state.socketReady;
    }
    const socket = new WebSocket(wsUrl());
    state.socket = socket;
    state.socketReady = new Promise((resolve, reject) => {
      socket.addEventListener("open", () => resolve(socket), { once: true });
      socket.addEventListener("close", (ev) => reject(closeReason(ev)), { once: true });
    });
    socket.addEventListener("message", (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      onEvent(msg);
    });
    socket.addEventListener("close", (ev) => {
      if (state.socket === socket) {
        state.socket = null;
        state.socketReady = null;
      }
      const cur = state.current;
      if (cur && !cur.finished) {
        finish(cur);
        showError(closeReason(ev));
      }
    });
    return state.socketReady;
  }

  function closeReason(ev) {
    if (ev.code === 1009) return "The image is too large to send over the stream.";
    if (ev.code === 1008 || ev.code === 4001 || ev.code === 4003) {
      els.tokenForm.hidden = false;
      return "The service refused the connection: the access token is missing or wrong.";
    }
    const why = ev.reason ? ": " + ev.reason : "";
    if (ev.code === 1006 && !state.token) {
      return "Could not connect to the service's stream (it may need an access token, " +
        "or it is not running)" + why + ".";
    }
    return "The connection to the service closed (code " + ev.code + why + ").";
  }

  // ---------------------------------------------------------------- one image
  async function read() {
    clearError();
    if (state.current) finish(state.current);
    const id = "page-" + (++state.counter);
    const cur = {
      id: id, started: performance.now(), boxes: [], texts: new Map(), finished: false,
      timer: null,
    };
    state.current = cur;
    resetView();
    setState("reading");
    setStatus("Sending the image…");
    let image;
    try {
      image = await readAsDataUrl(state.file);
    } catch (e) {
      finish(cur);
      showError("The file could not be read: " + e.message);
      return;
    }
    let socket;
    try {
      socket = await openSocket();
    } catch (reason) {
      if (state.current === cur) { finish(cur); showError(String(reason)); }
      return;
    }
    if (state.current !== cur) return; // superseded while connecting
    cur.timer = setTimeout(() => {
      if (!cur.finished) { finish(cur); showError("No answer from the service within " +
        STREAM_TIMEOUT_MS / 1000 + " s."); }
    }, STREAM_TIMEOUT_MS);
    socket.send(JSON.stringify({ id: id, image: image, languages: [els.language.value] }));
    els.body.dataset.requestId = id;
  }

  function finish(cur) {
    cur.finished = true;
    if (cur.timer) clearTimeout(cur.timer);
  }

  function onEvent(msg) {
    const cur = state.current;
    if (!cur || msg.id !== cur.id || cur.finished) return; // an older image's events
    switch (msg.type) {
      case "accepted":
        setStatus("Finding text…");
        break;
      case "detected":
        onDetected(cur, msg.regions || []);
        break;
      case "line":
        onLine(cur, msg);
        break;
      case "done":
        onDone(cur, msg);
        break;
      case "error":
        finish(cur);
        showError((msg.error || "The service could not read this image.") +
          (msg.code ? " (" + msg.code + ")" : ""));
        break;
      default:
        break;
    }
  }

  function onDetected(cur, regions) {
    cur.boxes = [];
    for (const r of regions) cur.boxes[r.index] = r.bbox;
    els.lines.innerHTML = "";
    // Detection order is not reading order: list the lines top to bottom, left to right
    // (the final text, in the service's reading order, follows when all are read).
    const sorted = regions.slice().sort((a, b) => topLeft(a.bbox, 1) - topLeft(b.bbox, 1) ||
      topLeft(a.bbox, 0) - topLeft(b.bbox, 0));
    for (const r of sorted) {
      const li = document.createElement("li");
      li.dataset.index = String(r.index);
      li.className = "pending";
      li.tabIndex = 0;
      li.textContent = "reading…";
      els.lines.appendChild(li);
    }
    setState("detected");
    const n = regions.length;
    setStatus(n === 0 ? "No text found." : "Found " + n + " line" + (n === 1 ? "" : "s") +
      "; reading…");
    redraw();
  }

  function topLeft(bbox, axis) {
    return bbox && bbox.length ? Math.min(...bbox.map((p) => p[axis])) : 0;
  }

  function lineItem(index) {
    for (const li of els.lines.children) if (Number(li.dataset.index) === index) return li;
    const li = document.createElement("li");
    li.dataset.index = String(index);
    li.tabIndex = 0;
    els.lines.appendChild(li);
    return li;
  }

  function onLine(cur, msg) {
    if (msg.bbox && !cur.boxes[msg.index]) cur.boxes[msg.index] = msg.bbox;
    cur.texts.set(msg.index, msg.text);
    const li = lineItem(msg.index);
    li.className = "";
    li.textContent = msg.text;
    if (typeof msg.confidence === "number") {
      const conf = document.createElement("span");
      conf.className = "conf";
      conf.textContent = Math.round(msg.confidence * 100) + "%";
      li.appendChild(conf);
    }
    els.lines.dataset.count = String(cur.texts.size);
    els.lineCount.textContent = "(" + cur.texts.size + ")";
    const total = cur.boxes.filter(Boolean).length;
    setStatus("Read " + cur.texts.size + " of " + total + " lines…");
    redraw();
  }

  function onDone(cur, msg) {
    finish(cur);
    for (const li of els.lines.children) {
      if (li.classList.contains("pending")) {
        li.className = "dropped";
        li.textContent = "(not readable)";
      }
    }
    // One line per text line: "text" is every region joined by spaces (as the original
    // service sent it), "lines" keeps the line breaks.
    els.text.value = Array.isArray(msg.lines) ? msg.lines.join("\n") : (msg.text || "");
    els.result.hidden = false;
    els.timings.innerHTML = "";
    const perf = msg.performance || {};
    const rows = [["round trip (page)", Math.round(performance.now() - cur.started) + " ms"]];
    for (const [k, v] of Object.entries(perf)) {
      rows.push([k.replace(/_ms$/, "").replace(/_/g, " "),
        typeof v === "number" ? (Math.round(v * 10) / 10) + " ms" : String(v)]);
    }
    for (const [k, v] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = v;
      els.timings.append(dt, dd);
    }
    const n = cur.texts.size;
    const total = perf.total_time_ms != null ? " in " + Math.round(perf.total_time_ms) + " ms" : "";
    const notes = (msg.warnings || []).map((w) => " " + w.message).join("");
    setStatus((n === 0 ? "Done: no text found." :
      "Done: " + n + " line" + (n === 1 ? "" : "s") + total + ".") + notes);
    setState("done");
    redraw();
  }

  async function copyText() {
    const text = els.text.value;
    let ok = false;
    // The Clipboard API needs a secure context (https or localhost); a Pi on the LAN is
    // usually plain http, where the older selection-based copy still works.
    if (navigator.clipboard && window.isSecureContext) {
      try { await navigator.clipboard.writeText(text); ok = true; } catch (e) { ok = false; }
    }
    if (!ok) {
      els.text.focus();
      els.text.select();
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    }
    els.copied.textContent = ok ? "Copied." : "Select the text and copy it by hand.";
    setTimeout(() => { els.copied.textContent = ""; }, 2500);
  }

  // ---------------------------------------------------------------- drawing
  function resetView() {
    els.lines.innerHTML = "";
    els.lines.dataset.count = "0";
    els.lineCount.textContent = "";
    els.result.hidden = true;
    els.text.value = "";
    els.timings.innerHTML = "";
    state.highlight = -1;
    redraw();
  }

  function imageExtent(cur) {
    if (state.image) return [state.image.naturalWidth, state.image.naturalHeight];
    // No preview: size the canvas to the boxes so they can still be shown.
    let w = 0, h = 0;
    for (const b of (cur ? cur.boxes : [])) {
      if (!b) continue;
      for (const [x, y] of b) { w = Math.max(w, x); h = Math.max(h, y); }
    }
    return w && h ? [Math.ceil(w) + 10, Math.ceil(h) + 10] : [0, 0];
  }

  function redraw() {
    const cur = state.current;
    const [iw, ih] = imageExtent(cur);
    const canvas = els.canvas;
    if (!iw || !ih) {
      canvas.width = 0;
      canvas.height = 0;
      canvas.dataset.boxes = "0";
      return;
    }
    const scale = Math.min(1, MAX_CANVAS_SIDE / Math.max(iw, ih));
    state.scale = scale;
    const w = Math.round(iw * scale), h = Math.round(ih * scale);
    if (canvas.width !== w) canvas.width = w;
    if (canvas.height !== h) canvas.height = h;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    if (state.image) ctx.drawImage(state.image, 0, 0, w, h);
    let drawn = 0;
    const lw = Math.max(2, Math.round(Math.max(w, h) / 500));
    const boxes = cur ? cur.boxes : [];
    for (let i = 0; i < boxes.length; i++) {
      const b = boxes[i];
      if (!b || b.length < 3) continue;
      const done = cur.texts.has(i);
      ctx.beginPath();
      ctx.moveTo(b[0][0] * scale, b[0][1] * scale);
      for (let k = 1; k < b.length; k++) ctx.lineTo(b[k][0] * scale, b[k][1] * scale);
      ctx.closePath();
      if (i === state.highlight) {
        ctx.fillStyle = "rgba(10, 102, 194, 0.25)";
        ctx.fill();
      }
      ctx.lineWidth = lw;
      ctx.strokeStyle = done ? "rgba(26, 160, 70, 0.95)" : "rgba(230, 120, 0, 0.95)";
      ctx.stroke();
      drawn++;
    }
    canvas.dataset.boxes = String(drawn);
  }

  start();
})();
