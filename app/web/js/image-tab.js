// The Images tab: drop or pick images; each gets a card with the picture, the predicted mask
// and box drawn over it, the class with its confidence, the top-5 and the request time. In
// scene mode (a street scene) every sign found gets its mask, box and label, and the card
// lists them.

import { describeError, detectImage, predictImage } from "./api.js";
import { el, milliseconds, percent } from "./format.js";
import { uprightPreview } from "./orientation.js";
import { createOverlay, signLabel } from "./overlay.js";

// Requests in flight at once. The service batches concurrent requests anyway; a small cap
// keeps each card's request time about its own image rather than the browser's queue.
const PARALLEL_REQUESTS = 4;
const TOP_K = 5;

export function initImageTab(panel) {
  const input = panel.querySelector("#image-input");
  const dropZone = panel.querySelector("#drop-zone");
  const results = panel.querySelector("#image-results");
  const announce = panel.querySelector("#image-announce");
  const clearButton = panel.querySelector("#image-clear");
  const cards = [];
  // One per batch still being sent: "Clear results" aborts them all, so the cards it
  // removes neither keep the service busy nor are announced afterwards.
  const batches = new Set();

  async function handleFiles(files) {
    if (files.length === 0) return;
    clearButton.disabled = false;
    const mode = panel.querySelector('input[name="image-mode"]:checked').value;
    const batch = files.map((file) => createCard(file, mode));
    results.prepend(...batch.map((card) => card.element));
    cards.push(...batch);
    const control = new AbortController();
    batches.add(control);
    try {
      await runWithLimit(batch, PARALLEL_REQUESTS, control.signal, async (card) => {
        const sentence = await predictCard(card, control.signal);
        if (!control.signal.aborted) announce.textContent = sentence;
      });
    } finally {
      batches.delete(control);
    }
  }

  panel.querySelector("#image-pick").addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    handleFiles([...input.files]);
    input.value = ""; // so that choosing the same file again still fires "change"
  });
  clearButton.addEventListener("click", () => {
    for (const control of batches) control.abort();
    batches.clear();
    for (const card of cards.splice(0)) card.dispose();
    results.replaceChildren();
    announce.textContent = "Results cleared";
    clearButton.disabled = true;
  });

  // The whole panel takes drops (main.js lets them happen), so a file dropped beside the
  // zone is read too.
  panel.addEventListener("dragover", () => dropZone.classList.add("dragging"));
  panel.addEventListener("dragleave", (event) => {
    if (!panel.contains(event.relatedTarget)) dropZone.classList.remove("dragging");
  });
  panel.addEventListener("drop", (event) => {
    dropZone.classList.remove("dragging");
    handleFiles([...event.dataTransfer.files]);
  });
}

/** Runs `worker` over `items`, at most `limit` at a time, in order of start; once `signal`
 * is aborted no further item is started. */
async function runWithLimit(items, limit, signal, worker) {
  let next = 0;
  const lane = async () => {
    while (next < items.length && !signal.aborted) await worker(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
}

function createCard(file, mode) {
  const url = URL.createObjectURL(file);
  const picture = el("img", { src: url, alt: `Uploaded image ${file.name}` });
  const maskLayer = el("canvas", { className: "mask-layer", "aria-hidden": "true" });
  const boxLayer = el("canvas", { className: "box-layer", "aria-hidden": "true" });
  const frame = el("div", { className: "frame" }, picture, maskLayer, boxLayer);
  let shownSize = null; // [height, width] of the preview, once it has loaded
  let answerSize = null; // [height, width] of the upright picture, from the service's answer

  // The boxes and masks are placed on the upright picture (the answer's image_size). A
  // preview of another shape (one the browser shows turned, by an EXIF orientation this page
  // could not read) would put them in the wrong place: the card then shows them over a plain
  // background instead, as for a format the browser cannot show.
  function checkPreview() {
    if (!shownSize || !answerSize) return;
    const shownAspect = shownSize[1] / shownSize[0];
    const answerAspect = answerSize[1] / answerSize[0];
    if (Math.abs(shownAspect - answerAspect) > 0.01 * answerAspect) {
      frame.classList.add("no-preview");
    }
  }

  // Formats the service reads but browsers do not show (TIFF, PPM) still get their mask,
  // over a plain background.
  picture.addEventListener("error", () => frame.classList.add("no-preview"));
  picture.addEventListener("load", async () => {
    let upright = null;
    try {
      upright = await uprightPreview(file, picture);
    } catch {
      // An unreadable file: the preview stays as the browser shows it, checked below.
    }
    if (upright) {
      upright.className = "preview";
      upright.setAttribute("role", "img");
      upright.setAttribute("aria-label", picture.alt);
      picture.replaceWith(upright);
      shownSize = [upright.height, upright.width];
    } else {
      shownSize = [picture.naturalHeight, picture.naturalWidth];
    }
    if (!answerSize) frame.style.setProperty("aspect-ratio", `${shownSize[1]} / ${shownSize[0]}`);
    checkPreview();
  });
  const body = el(
    "div",
    { className: "result-body" },
    el("h3", { className: "file-name", title: file.name }, file.name),
    el("p", { className: "pending-note" }, mode === "scene" ? "Finding the signs…" : "Reading the sign…"),
  );
  const element = el(
    "article",
    { className: mode === "scene" ? "result scene" : "result", "aria-busy": "true" },
    frame,
    body,
  );
  const overlay = createOverlay(maskLayer, boxLayer);
  return {
    file,
    mode,
    element,
    body,
    overlay,
    /** Shapes the card to the upright picture the answer describes ([height, width]). */
    fitTo(imageSize) {
      answerSize = imageSize;
      frame.style.setProperty("aspect-ratio", `${imageSize[1]} / ${imageSize[0]}`);
      checkPreview();
    },
    dispose() {
      overlay.disconnect();
      URL.revokeObjectURL(url);
    },
  };
}

/** Sends one card's file and fills the card in; returns the sentence to announce (null once
 * `signal` is aborted: the card is gone, and nothing about it is said). */
async function predictCard(card, signal) {
  const started = performance.now();
  try {
    if (card.mode === "scene") {
      const scene = await detectImage(card.file, { signal });
      if (signal.aborted) return null;
      showScene(card, scene, performance.now() - started);
      return `${card.file.name}: ${countText(scene.signs.length)}`;
    }
    const prediction = await predictImage(card.file, { topK: TOP_K, signal });
    if (signal.aborted) return null;
    showPrediction(card, prediction, performance.now() - started);
    return `${card.file.name}: ${prediction.class_name}, ${percent(prediction.confidence, 0)} confidence`;
  } catch (error) {
    if (signal.aborted) return null;
    const { title, detail, code } = describeError(error);
    showError(card, title, detail, code);
    return `${card.file.name}: ${title}`;
  } finally {
    card.element.removeAttribute("aria-busy");
  }
}

function showPrediction(card, prediction, requestMs) {
  const [height, width] = prediction.image_size;
  card.fitTo(prediction.image_size);
  card.overlay.show(prediction);

  const topK = el(
    "ol",
    { className: "top-k", "aria-label": `Top ${prediction.top_k.length} classes` },
    ...prediction.top_k.map((score, rank) => topKRow(score, rank === 0)),
  );
  const where = prediction.box
    ? `sign at x ${prediction.box[0]}–${prediction.box[2]}, y ${prediction.box[1]}–${prediction.box[3]}`
    : "no sign region found";
  const known = prediction.kind === "sign";
  card.body.replaceChildren(
    el("h3", { className: "file-name", title: card.file.name }, card.file.name),
    el(
      "p",
      { className: known ? "prediction" : "prediction open-set" },
      el("span", { className: "class-name" }, prediction.class_name),
      el("span", { className: "confidence" }, percent(prediction.confidence)),
    ),
    el("p", { className: "hint" }, `${KIND_TEXT[prediction.kind](prediction)} · ${width} × ${height} px · ${where}`),
    known ? topK : el("div", {}, el("p", { className: "hint" }, "Closest known classes:"), topK),
    ...(looksLikeAScene(prediction) ? [el("p", { className: "scene-hint" }, SCENE_HINT)] : []),
    timingLine(requestMs, prediction.timings_ms),
  );
}

// A frame-sized picture read as "no sign" is most often a road scene whose signs are small:
// one-sign mode reads the whole picture as one sign, so say which mode finds them.
const SCENE_SIDE = 640;
const SCENE_HINT = "A whole road scene? Choose “a street scene: find every sign” above and drop it again.";

function looksLikeAScene(prediction) {
  return prediction.kind === "no_sign" && Math.max(...prediction.image_size) >= SCENE_SIDE;
}

function countText(count) {
  return count === 0 ? "no sign found" : `${count} sign${count === 1 ? "" : "s"} found`;
}

function timingLine(requestMs, timings) {
  return el(
    "p",
    { className: "timing" },
    `Request ${milliseconds(requestMs)} · server ${milliseconds(timings.total)} `,
    el(
      "span",
      { className: "hint" },
      `(decode ${milliseconds(timings.decode)}, queue ${milliseconds(timings.queue)}, ` +
        `model ${milliseconds(timings.inference)})`,
    ),
  );
}

/** A street scene's card: every sign drawn, and listed with its class and scores. */
function showScene(card, scene, requestMs) {
  const [height, width] = scene.image_size;
  card.fitTo(scene.image_size);
  card.overlay.show(scene);
  const signs = el(
    "ol",
    { className: "signs", "aria-label": "Signs found" },
    ...scene.signs.map((sign) =>
      el(
        "li",
        { className: sign.kind === "sign" ? "" : "open-set" },
        el("span", { className: "class-name" }, signLabel(sign)),
        el(
          "span",
          { className: "hint" },
          ` at x ${sign.box[0]}–${sign.box[2]}, y ${sign.box[1]}–${sign.box[3]} · ` +
            `sign pixels ${percent(sign.score, 0)} sure`,
        ),
      ),
    ),
  );
  card.body.replaceChildren(
    el("h3", { className: "file-name", title: card.file.name }, card.file.name),
    el(
      "p",
      { className: "prediction scene-count" },
      el("span", { className: "class-name" }, countText(scene.signs.length)),
    ),
    el("p", { className: "hint" }, `street scene · ${width} × ${height} px`),
    signs,
    timingLine(requestMs, scene.timings_ms),
  );
}

// What the answer is, in words: a class the model knows, a sign it does not, or none.
const KIND_TEXT = {
  sign: (prediction) => `class ${prediction.class_id}`,
  unknown_sign: () => "a sign of none of the model's classes",
  no_sign: () => "no traffic sign in the picture",
};

function topKRow(score, isTop) {
  const fill = el("span", { className: "bar-fill" });
  fill.style.setProperty("--value", score.confidence.toFixed(4));
  return el(
    "li",
    { className: isTop ? "top" : "" },
    el("span", { className: "top-k-name", title: score.class_name }, score.class_name),
    el("span", { className: "top-k-value" }, percent(score.confidence)),
    el("span", { className: "bar", "aria-hidden": "true" }, fill),
  );
}

function showError(card, title, detail, code) {
  card.element.classList.add("failed");
  card.body.replaceChildren(
    el("h3", { className: "file-name", title: card.file.name }, card.file.name),
    el(
      "div",
      { className: "error-box", role: "alert" },
      el("p", { className: "error-title" }, title),
      el("p", { className: "error-detail" }, detail),
      el("p", { className: "hint" }, `code: ${code}`),
    ),
  );
}
