// Tauon console: the live region of each page is re-fetched from the console every two seconds;
// the "Try it" section draws, uploads or types an input, sends it to the model through the
// console, and posts feedback. No request goes anywhere but this server.
"use strict";

(function namespaceSelector() {
  // A new namespace shows at once (no inline handler: the page's CSP allows none).
  const select = document.getElementById("namespace");
  if (!select) return;
  document.getElementById("show-namespace").hidden = true;
  select.addEventListener("change", () => select.form.submit());
})();

(function live() {
  const source = document.getElementById("live-source");
  const target = document.getElementById("live");
  const url = source && source.dataset.live;
  if (!url || !target) return;
  async function refresh() {
    try {
      const r = await fetch(url, { headers: { Accept: "text/html" }, cache: "no-store" });
      target.innerHTML = await r.text();
      target.dataset.updated = String(Date.now());
    } catch (err) {
      target.dataset.error = String(err);
    }
    setTimeout(refresh, 2000);
  }
  setTimeout(refresh, 2000);
})();

(function tryIt() {
  const section = document.querySelector("section.try");
  if (!section) return;
  const api = section.dataset.api;
  const $ = (id) => document.getElementById(id);
  const answer = $("answer"), problem = $("try-error");
  let meta = null, lastPrediction = null;

  function showError(message) {
    problem.textContent = message;
    problem.hidden = false;
  }

  async function call(path, init) {
    const r = await fetch(api + path, init);
    let body;
    try { body = await r.json(); } catch (e) { body = { error: "the console answered " + r.status }; }
    if (!r.ok) throw Object.assign(new Error(body.error || ("HTTP " + r.status)), { status: r.status });
    return body;
  }

  // --- the drawing pad
  const pad = $("pad"), ctx = pad.getContext("2d");
  function clearPad() { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, pad.width, pad.height); }
  clearPad();
  let drawing = false;
  function stroke(ev) {
    if (!drawing) return;
    const box = pad.getBoundingClientRect();
    const p = ev.touches ? ev.touches[0] : ev;
    ctx.fillStyle = "#fff";
    ctx.beginPath();
    ctx.arc((p.clientX - box.left) * pad.width / box.width, (p.clientY - box.top) * pad.height / box.height, 9, 0, 2 * Math.PI);
    ctx.fill();
    ev.preventDefault();
  }
  pad.addEventListener("pointerdown", (ev) => { drawing = true; stroke(ev); });
  pad.addEventListener("pointermove", stroke);
  window.addEventListener("pointerup", () => { drawing = false; });
  $("clear").addEventListener("click", () => { clearPad(); $("upload").value = ""; });

  function padPixels() {
    // [C, H, W] at the model's input size: the pad averaged down, 0..255.
    const [c, h, w] = meta.inputs[0].shape.slice(1);
    const small = document.createElement("canvas");
    small.width = w; small.height = h;
    const sctx = small.getContext("2d");
    sctx.imageSmoothingEnabled = true;
    sctx.drawImage(pad, 0, 0, w, h);
    const data = sctx.getImageData(0, 0, w, h).data;
    const planes = [];
    for (let ch = 0; ch < c; ch++) {
      const rows = [];
      for (let y = 0; y < h; y++) {
        const row = [];
        for (let x = 0; x < w; x++) {
          const i = 4 * (y * w + x);
          row.push(c === 1 ? Math.round((data[i] + data[i + 1] + data[i + 2]) / 3) : data[i + ch]);
        }
        rows.push(row);
      }
      planes.push(rows);
    }
    return planes;
  }

  async function predict() {
    problem.hidden = true;
    answer.textContent = "…";
    try {
      const task = meta.parameters.task;
      let init;
      const upload = $("upload").files[0];
      if (task === "image-classification" && upload) {
        init = { method: "POST", headers: { "Content-Type": upload.type || "application/octet-stream" }, body: upload };
      } else {
        let body;
        if (task === "text-classification") body = { text: $("text").value };
        else if (task === "tabular-classification") {
          const features = {};
          for (const input of document.querySelectorAll("#features input")) {
            features[input.name] = input.value === "" ? null : Number(input.value);
          }
          body = { features };
        } else body = { instances: [padPixels()] };
        init = { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
      }
      const result = await call("/predict?topK=3", init);
      const p = result.predictions[0];
      lastPrediction = p;
      answer.innerHTML = "";
      const label = document.createElement("strong");
      label.id = "predicted-label";
      label.textContent = p.label;
      answer.append("Predicted ", label, " — ");
      answer.append(p.topK.map((t) => `${t.label} ${(100 * t.score).toFixed(1)} %`).join(", "));
      $("correct").hidden = false;
    } catch (err) {
      answer.textContent = "";
      showError(err.message);
    }
  }

  async function sendFeedback() {
    problem.hidden = true;
    try {
      const r = await call("/feedback", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ predictionId: lastPrediction.predictionId, label: $("truth").value }),
      });
      answer.append(` — feedback stored (${r.correct ? "it was right" : "it was wrong"})`);
      $("correct").hidden = true;
    } catch (err) { showError(err.message); }
  }

  $("predict").addEventListener("click", predict);
  $("send-feedback").addEventListener("click", sendFeedback);
  async function metadata(tries) {
    // A model that has just become Ready may not be reachable by its name for a moment.
    for (let i = 1; ; i++) {
      try { return await call("/metadata"); } catch (err) {
        if (i >= tries || err.status !== 502) throw err;  // 409 (not Ready) is an answer
        await new Promise((ok) => setTimeout(ok, 2000));
      }
    }
  }
  metadata(5).then((m) => {
    meta = m;
    const task = m.parameters.task || "image-classification";
    section.querySelector(".try-image").hidden = task !== "image-classification";
    section.querySelector(".try-text").hidden = task !== "text-classification";
    section.querySelector(".try-tabular").hidden = task !== "tabular-classification";
    for (const name of m.parameters.features || []) {
      const label = document.createElement("label");
      label.textContent = name + " ";
      const input = document.createElement("input");
      input.name = name; input.type = "number"; input.step = "any";
      label.append(input);
      $("features").append(label);
    }
    for (const cls of m.parameters.classes) {
      const o = document.createElement("option"); o.value = o.textContent = cls; $("truth").append(o);
    }
    section.dataset.ready = "true";
  }).catch((err) => showError(err.message));
})();
