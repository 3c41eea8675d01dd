// SmolRGPT web page: pick or upload an RGB-D frame, draw numbered regions, ask with <mask> references.
// No dependencies, no network beyond this server. The k-th <mask> of the question refers to region k.
"use strict";

(() => {
  // The same colours and numbering as smolrgpt.visualize.PALETTE / draw_regions.
  const PALETTE = [[230, 159, 0], [86, 180, 233], [0, 158, 115], [240, 228, 66], [0, 114, 178],
    [213, 94, 0], [204, 121, 167], [255, 255, 255]];
  const TAG = "<mask>";
  const CLICK_SLOP = 4;  // screen pixels: a shorter drag is a click

  const $ = (id) => document.getElementById(id);
  const state = {
    image: null, imageBlob: null, depthBlob: null, width: 0, height: 0,
    frameId: null, uploading: null, regions: [], examples: [], example: null,
    drag: null, busy: false, lastRequest: null, lastAnswer: null,
  };
  window.smolrgpt = state;  // for scripts and tests: the regions and the last request/answer

  const colour = (k, alpha) => {
    const c = PALETTE[k % PALETTE.length].join(",");
    return alpha === undefined ? `rgb(${c})` : `rgba(${c},${alpha})`;
  };
  const countTags = (text) => text.split(TAG).length - 1;

  // ---------------------------------------------------------------------------------------- drawing
  function draw() {
    const cv = $("canvas");
    const ctx = cv.getContext("2d");
    if (!state.image) { ctx.clearRect(0, 0, cv.width, cv.height); return; }
    if (cv.width !== state.width || cv.height !== state.height) {
      cv.width = state.width;
      cv.height = state.height;
      fitCanvas();
    }
    ctx.clearRect(0, 0, cv.width, cv.height);
    ctx.drawImage(state.image, 0, 0);
    const lw = Math.max(2, Math.round(Math.max(state.width, state.height) / 480));
    state.regions.forEach((r, k) => {
      const [x1, y1, x2, y2] = r.box;
      ctx.fillStyle = colour(k, 0.45);
      ctx.fillRect(x1, y1, x2 - x1, y2 - y1);
      ctx.strokeStyle = colour(k);
      ctx.lineWidth = lw;
      ctx.strokeRect(x1 + lw / 2, y1 + lw / 2, Math.max(0, x2 - x1 - lw), Math.max(0, y2 - y1 - lw));
    });
    const fs = Math.max(12, Math.round(state.height / 30));
    ctx.font = `bold ${fs}px sans-serif`;
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    state.regions.forEach((r, k) => {
      const cx = (r.box[0] + r.box[2]) / 2, cy = (r.box[1] + r.box[3]) / 2, label = String(k);
      const w = ctx.measureText(label).width;
      ctx.fillStyle = "#000";
      ctx.fillRect(cx - w / 2 - 4, cy - fs / 2 - 3, w + 8, fs + 6);
      ctx.fillStyle = colour(k);
      ctx.fillText(label, cx, cy + 1);
    });
    const d = state.drag;
    if (d && d.moved) {
      const [x1, y1, x2, y2] = normBox(d.x0, d.y0, d.x1, d.y1);
      ctx.setLineDash([6, 4]);
      ctx.lineWidth = lw;
      ctx.strokeStyle = "#fff";
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      ctx.setLineDash([]);
      ctx.fillStyle = colour(state.regions.length, 0.25);
      ctx.fillRect(x1, y1, x2 - x1, y2 - y1);
    }
  }

  // Display size: the whole image visible, as wide as the column allows and at most 62% of the window's
  // height, so the answer below it stays in view. Drawing happens in image pixels.
  function fitCanvas() {
    const cv = $("canvas");
    if (!state.image) return;
    const maxW = $("canvas-wrap").clientWidth, maxH = Math.max(240, window.innerHeight * 0.62);
    const scale = Math.min(maxW / state.width, maxH / state.height);
    cv.style.width = `${Math.floor(state.width * scale)}px`;
    cv.style.height = `${Math.floor(state.height * scale)}px`;
  }

  function normBox(xa, ya, xb, yb) {
    const clampX = (v) => Math.min(state.width, Math.max(0, Math.round(v)));
    const clampY = (v) => Math.min(state.height, Math.max(0, Math.round(v)));
    return [clampX(Math.min(xa, xb)), clampY(Math.min(ya, yb)), clampX(Math.max(xa, xb)), clampY(Math.max(ya, yb))];
  }

  // --------------------------------------------------------------------------- regions and the question
  function renderRegions() {
    const list = $("region-list");
    list.replaceChildren();
    state.regions.forEach((r, k) => {
      const li = document.createElement("li");
      li.dataset.index = k;
      li.dataset.box = r.box.join(",");
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = "chip";
      chip.textContent = k;
      chip.style.background = colour(k);
      chip.title = `insert <mask> for region ${k} at the cursor`;
      chip.addEventListener("click", () => insertTag(k));
      const text = document.createElement("span");
      text.className = "coords";
      text.textContent = `box ${r.box[0]},${r.box[1]} → ${r.box[2]},${r.box[3]}`;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "remove";
      remove.textContent = "×";
      remove.title = `remove region ${k}`;
      remove.addEventListener("click", () => { state.regions.splice(k, 1); changed(); });
      li.append(chip, text, remove);
      list.append(li);
    });
    $("undo").disabled = $("clear").disabled = state.regions.length === 0;
    $("suggested").disabled = !(state.example && state.example.regions.length);
  }

  function renderMapping() {
    const q = $("question").value;
    const parts = q.split(TAG);
    const tags = parts.length - 1, n = state.regions.length;
    const box = $("mapping");
    box.replaceChildren();
    const preview = document.createElement("div");
    preview.className = "preview";
    parts.forEach((part, k) => {
      preview.append(document.createTextNode(part));
      if (k < tags) {
        const chip = document.createElement("span");
        chip.className = "tag" + (k < n ? "" : " missing");
        chip.textContent = k < n ? `<mask> → region ${k}` : "<mask> → no region";
        if (k < n) chip.style.background = colour(k);
        preview.append(chip);
      }
    });
    const line = document.createElement("div");
    line.id = "mapping-status";
    if (tags === 0 && n === 0) {
      line.className = "status";
      line.textContent = q.trim() ? "no <mask>, no regions: a question about the whole image" : "";
    } else if (tags === n) {
      line.className = "ok";
      line.textContent = `${tags} <mask> tag${tags === 1 ? "" : "s"} ↔ ${n} region${n === 1 ? "" : "s"}`;
    } else {
      line.className = "warn";
      line.textContent = `the question has ${tags} <mask> tag${tags === 1 ? "" : "s"} but ${n} region${n === 1 ? " is" : "s are"} drawn`;
    }
    if (q.trim()) box.append(preview);
    box.append(line);
    const ready = state.frameId !== null && q.trim() && tags === n && !state.busy;
    $("ask").disabled = !ready;
    $("ask").title = ready ? "" : (state.frameId === null ? "load a frame first" : tags !== n ? line.textContent : "");
  }

  function changed() {
    setStatus("note", "");
    renderRegions();
    renderMapping();
    draw();
  }

  function addRegion(box) {
    if (box[2] - box[0] < 1 || box[3] - box[1] < 1) return;
    state.regions.push({ box });
    changed();
  }

  // Insert <mask> for region j at the cursor. The new tag is the k-th of the question; to keep
  // "k-th <mask> = region k", region j moves to position k (the list and the numbers update).
  function insertTag(j) {
    const ta = $("question");
    const start = ta.selectionStart ?? ta.value.length, end = ta.selectionEnd ?? start;
    const before = ta.value.slice(0, start), after = ta.value.slice(end);
    const pre = before && !/\s$/.test(before) ? " " : "";
    const post = after && !/^[\s?.,!;:]/.test(after) ? " " : "";
    const k = countTags(before);
    if (j !== k && k < state.regions.length) {
      const [moved] = state.regions.splice(j, 1);
      state.regions.splice(k, 0, moved);
      setStatus("note", `region ${j} is now region ${k}: the k-th <mask> is region k`);
    }
    ta.value = before + pre + TAG + post + after;
    const caret = (before + pre + TAG + post).length;
    ta.focus();
    ta.setSelectionRange(caret, caret);
    const note = $("note").textContent;
    changed();
    setStatus("note", note);
  }

  // ------------------------------------------------------------------------------ canvas interaction
  function imagePoint(ev) {
    const r = $("canvas").getBoundingClientRect();
    return [(ev.clientX - r.left) * state.width / r.width, (ev.clientY - r.top) * state.height / r.height];
  }

  function regionAt(x, y) {
    for (let k = state.regions.length - 1; k >= 0; k--) {
      const [x1, y1, x2, y2] = state.regions[k].box;
      if (x >= x1 && x < x2 && y >= y1 && y < y2) return k;
    }
    return -1;
  }

  function onPointerDown(ev) {
    if (!state.image || ev.button !== 0) return;
    const [x, y] = imagePoint(ev);
    state.drag = { x0: x, y0: y, x1: x, y1: y, sx: ev.clientX, sy: ev.clientY, moved: false };
    $("canvas").setPointerCapture?.(ev.pointerId);
    ev.preventDefault();
  }

  function onPointerMove(ev) {
    const d = state.drag;
    if (!d) return;
    [d.x1, d.y1] = imagePoint(ev);
    if (Math.abs(ev.clientX - d.sx) + Math.abs(ev.clientY - d.sy) >= CLICK_SLOP) d.moved = true;
    if (d.moved) draw();
  }

  function onPointerUp(ev) {
    const d = state.drag;
    if (!d) return;
    state.drag = null;
    [d.x1, d.y1] = imagePoint(ev);
    if (d.moved) {
      addRegion(normBox(d.x0, d.y0, d.x1, d.y1));
      return;
    }
    const hit = regionAt(d.x0, d.y0);
    if (hit >= 0) {
      insertTag(hit);
    } else {  // a click on an empty spot: a small box around it
      const half = Math.max(4, Math.round(Math.min(state.width, state.height) * 0.04));
      addRegion(normBox(d.x0 - half, d.y0 - half, d.x0 + half, d.y0 + half));
    }
  }

  // ---------------------------------------------------------------------------------------- frames
  function setStatus(id, text, cls) {
    const el = $(id);
    el.textContent = text;
    el.className = "status" + (cls ? " " + cls : "");
  }

  function showError(text) {
    $("error").textContent = text || "";
  }

  function loadBitmap(blob) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("the browser cannot display this image"));
      img.src = URL.createObjectURL(blob);
    });
  }

  function clearAnswer(keepError = false) {
    for (const id of ["answer-text", "answer-category", "answer-normalized"]) {
      $(id).textContent = "—";
      $(id).classList.remove("empty");
    }
    $("answer-text").dataset.answer = "";
    setStatus("timings", "");
    if (!keepError) showError("");
  }

  // A frame that could not be shown or was refused: nothing stays active, so Ask cannot silently
  // ask about the previous image.
  function dropFrame() {
    Object.assign(state, { image: null, imageBlob: null, depthBlob: null, frameId: null, uploading: null,
      regions: [], example: null });
    $("placeholder").hidden = false;
    $("depth-figure").hidden = true;
    clearAnswer(true);
    changed();
  }

  async function setFrame(imageBlob, depthBlob, label) {
    showError("");
    let img;
    try {
      img = await loadBitmap(imageBlob);
    } catch (err) {
      dropFrame();
      setStatus("frame-status", "no frame", "warn");
      showError(`RGB image: ${err.message}`);
      return;
    }
    Object.assign(state, { image: img, imageBlob, depthBlob, width: img.naturalWidth, height: img.naturalHeight,
      frameId: null, regions: [] });
    $("placeholder").hidden = true;
    const fig = $("depth-figure");
    fig.hidden = !depthBlob;
    if (depthBlob) {
      $("depth-preview").onerror = () => { fig.hidden = true; };  // e.g. a float TIFF: fine for the model
      $("depth-preview").src = URL.createObjectURL(depthBlob);
    }
    clearAnswer();
    changed();
    setStatus("frame-status", `${label}: ${state.width}×${state.height}`);
    await uploadFrame();
  }

  async function uploadFrame() {
    if (!state.imageBlob) return;
    const form = new FormData();
    form.append("image", state.imageBlob, "image");
    if (state.depthBlob) form.append("depth", state.depthBlob, "depth");
    form.append("depth_polarity", $("polarity").value);
    state.frameId = null;
    renderMapping();
    setStatus("frame-status", "uploading the frame…");
    const pending = fetch("/v1/frames", { method: "POST", body: form }).then(async (r) => {
      const body = await r.json().catch(() => ({ detail: r.statusText }));
      if (!r.ok) throw new Error(`${r.status}: ${body.detail}`);
      return body;
    });
    state.uploading = pending;
    try {
      const frame = await pending;
      if (state.uploading !== pending) return;  // a newer frame replaced this one
      state.frameId = frame.frame_id;
      setStatus("frame-status", `frame ${frame.width}×${frame.height} ready` +
        (frame.has_depth ? "" : " — no depth map: only questions without regions"), "ok");
    } catch (err) {
      if (state.uploading !== pending) return;
      dropFrame();
      setStatus("frame-status", "the frame was refused", "warn");
      showError(err.message);
    } finally {
      renderMapping();
    }
  }

  async function loadExample(name) {
    const ex = state.examples.find((e) => e.name === name);
    if (!ex) return;
    setStatus("frame-status", `loading ${ex.title}…`);
    try {
      const [image, depth] = await Promise.all([ex.image_url, ex.depth_url].map(async (url) => {
        const r = await fetch(url);
        if (!r.ok) throw new Error(`${url}: ${r.status}`);
        return r.blob();
      }));
      state.example = ex;
      $("polarity").value = ex.depth_polarity;
      $("question").placeholder = ex.question;
      $("question").value = ex.question;  // the example's question itself, so its <mask> tags count
      $("rgb-file").value = "";
      $("depth-file").value = "";
      await setFrame(image, depth, ex.title);
    } catch (err) {
      showError(`example: ${err.message}`);
    }
  }

  async function onFiles() {
    const rgb = $("rgb-file").files[0], depth = $("depth-file").files[0];
    if (!rgb) {
      if (depth) setStatus("frame-status", "now choose the RGB image");
      return;
    }
    state.example = null;
    $("example-select").value = "";
    await setFrame(rgb, depth || null, rgb.name);
  }

  // ---------------------------------------------------------------------------------------- asking
  async function postJSON(url, body) {
    const r = await fetch(url, { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify(body) });
    const data = await r.json().catch(() => ({ detail: r.statusText }));
    return { status: r.status, ok: r.ok, data };
  }

  async function ask() {
    if ($("ask").disabled) return;
    const request = () => ({ frame_id: state.frameId, question: $("question").value,
      regions: state.regions.map((r) => ({ box: r.box.slice() })) });
    state.busy = true;
    renderMapping();
    clearAnswer();
    $("answer-text").textContent = "thinking…";
    try {
      let body = request();
      let res = await postJSON("/v1/ask", body);
      if (res.status === 404) {  // the server's frame cache evicted our frame: upload it again
        await uploadFrame();
        body = request();
        res = await postJSON("/v1/ask", body);
      }
      if (!res.ok) {
        $("answer-text").textContent = "—";
        showError(`${res.status}: ${res.data.detail}`);
        return;
      }
      const a = res.data;
      state.lastRequest = body;
      state.lastAnswer = a;
      const text = $("answer-text");
      text.dataset.answer = a.answer;
      text.textContent = a.answer || "(empty answer)";
      text.classList.toggle("empty", !a.answer);
      $("answer-category").textContent = a.category ?? "—";
      $("answer-normalized").textContent = a.normalized_answer ?? "—";
      const t = a.timings || {};
      setStatus("timings", `model ${t.model_ms} ms · queue ${t.queue_ms} ms · batch of ${t.batch_size} · ` +
        `total ${t.total_ms} ms`);
    } catch (err) {
      $("answer-text").textContent = "—";
      showError(`request failed: ${err.message}`);
    } finally {
      state.busy = false;
      renderMapping();
    }
  }

  // ------------------------------------------------------------------------------------------ start
  async function start() {
    const cv = $("canvas");
    cv.addEventListener("pointerdown", onPointerDown);
    cv.addEventListener("pointermove", onPointerMove);
    cv.addEventListener("pointerup", onPointerUp);
    cv.addEventListener("pointercancel", () => { state.drag = null; draw(); });
    window.addEventListener("resize", fitCanvas);
    $("question").addEventListener("input", () => {
      if (!state.busy) clearAnswer(true);  // the answer shown belonged to the question before the edit
      renderMapping();
    });
    $("question").addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); ask(); }
    });
    $("ask").addEventListener("click", ask);
    $("undo").addEventListener("click", () => { state.regions.pop(); changed(); });
    $("clear").addEventListener("click", () => { state.regions = []; changed(); });
    $("suggested").addEventListener("click", () => {
      if (state.example) { state.regions = state.example.regions.map((r) => ({ box: r.box.slice() })); changed(); }
    });
    $("example-select").addEventListener("change", (ev) => loadExample(ev.target.value));
    $("rgb-file").addEventListener("change", onFiles);
    $("depth-file").addEventListener("change", onFiles);
    $("polarity").addEventListener("change", uploadFrame);
    changed();

    fetch("/health").then((r) => r.json()).then((h) => {
      const m = h.model;
      $("model-info").textContent = `${m.name} · ${m.preset} · ${(m.parameters / 1e6).toFixed(1)}M parameters · ${m.device}`;
    }).catch(() => { $("model-info").textContent = "model info unavailable"; });

    const select = $("example-select");
    select.options[0].textContent = "— loading examples… —";
    try {
      const r = await fetch("/v1/examples");
      state.examples = (await r.json()).examples;
      for (const ex of state.examples) select.add(new Option(`${ex.title} (${ex.width}×${ex.height})`, ex.name));
      select.options[0].textContent = "— choose an example —";
    } catch (err) {
      select.options[0].textContent = "— no examples —";
    }
    document.body.dataset.ready = "1";
  }

  start();
})();
