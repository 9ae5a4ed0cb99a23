// The Model tab and the one-line summary in the header: what GET /v1/model says about the
// served model, and its class list with a search box.

import { describeError, getModel } from "./api.js";
import { duration, el, percent } from "./format.js";

// While the service starts (or is unreachable) the page asks again on its own, so a page
// opened before `greedysign serve` finished loading fills in by itself.
const RETRY_MS = 2000;
const RETRIED_CODES = new Set(["not_ready", "overloaded", "network_error"]);

const METHOD_NAMES = {
  "greedy-dib": "Greedy-DIB (module by module, with an information-bottleneck term)",
  "greedy-ce": "Greedy (module by module, cross-entropy only)",
  sgd: "End-to-end SGD (baseline)",
};

// The figures a model file keeps (model/train.py SUMMARY_KEYS); others show under their key.
const METRIC_NAMES = {
  images: "Test images",
  accuracy: "Accuracy",
  macro_accuracy: "Mean per-class accuracy",
  rejection_rate: "Unknown signs and non-signs rejected",
  threshold: "Open-set threshold",
  box_iou: "Box IoU",
  mask_miou: "Mask mIoU",
  mask_iou: "Mask IoU",
  train_seconds: "Training time",
  datasets: "By collection",
  novel: "Signs unlike any training photo",
};

/** Loads /v1/model into `panel` and `summary`; returns a function that loads it again. */
export function initModelPanel(panel, summary) {
  const search = panel.querySelector("#class-search");
  const list = panel.querySelector("#class-list");
  const count = panel.querySelector("#class-count");
  const errorBox = panel.querySelector("#model-error");
  let retryTimer = null;

  search.addEventListener("input", () => filterClasses(list, count, search.value));

  let loading = false;

  async function load() {
    clearTimeout(retryTimer);
    loading = true;
    try {
      const model = await getModel();
      errorBox.hidden = true;
      showSummary(summary, "ready", summaryText(model));
      showFacts(panel.querySelector("#model-facts"), model);
      showMetrics(panel.querySelector("#model-metrics"), panel.querySelector("#model-split"), model);
      list.replaceChildren(
        ...model.classes.map((item) =>
          el(
            "li",
            { "data-search": `${item.class_id} ${item.class_name}`.toLowerCase() },
            el("span", { className: "class-id" }, String(item.class_id)),
            el("span", { className: "class-name" }, item.class_name),
          ),
        ),
      );
      filterClasses(list, count, search.value);
    } catch (error) {
      const { title, detail, code } = describeError(error);
      showSummary(summary, "error", title);
      errorBox.replaceChildren(el("p", { className: "error-title" }, title), el("p", {}, detail));
      errorBox.hidden = false;
      if (RETRIED_CODES.has(code)) retryTimer = setTimeout(load, RETRY_MS);
    } finally {
      loading = false;
    }
  }

  // A request elsewhere found the service gone or wanting a key: the header's "ready" may be
  // stale, so ask again (once; while it shows an error, the retry timer asks).
  window.addEventListener("service-trouble", () => {
    if (summary.dataset.state === "ready" && !loading) load();
  });
  load();
  return load;
}

function summaryText(model) {
  const accuracy = typeof model.metrics.accuracy === "number"
    ? ` · accuracy ${percent(model.metrics.accuracy)}`
    : "";
  return `${model.arch} · ${model.method} · ${model.num_classes} classes${accuracy} · ${model.device}`;
}

function showSummary(summary, state, text) {
  summary.dataset.state = state;
  summary.querySelector(".text").textContent = text;
}

function showFacts(facts, model) {
  const rows = [
    ["Method", METHOD_NAMES[model.method] || model.method],
    ["Architecture", model.arch],
    ["Trained on", model.dataset],
    ["Input size", `${model.image_size} × ${model.image_size} px`],
    ["Classes", String(model.num_classes)],
    ["Runs on", model.fp16 ? `${model.device} (fp16)` : model.device],
    ["File", model.file],
    ["Data fingerprint", model.data_fingerprint.slice(0, 12) || "–"],
    ["Unknown signs", openSetText(model.open_set)],
    ["Scene model", sceneModelText(model.scene_model)],
  ];
  facts.replaceChildren(...rows.flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, value)]));
}

/** How the model turns a picture down: learned outputs, a threshold, or both. */
function openSetText(openSet) {
  const threshold = `below ${percent(openSet.threshold, 0)} confidence`;
  return openSet.trained
    ? `learned (“unknown sign”, “no sign”), and any class ${threshold}`
    : `any class ${threshold} (its open-set outputs saw no example)`;
}

/** What finds the signs of a street scene (the Images tab's scene mode, the video's). */
function sceneModelText(scene) {
  if (!scene) return "none: street-scene mode is off";
  const boxIou = typeof scene.metrics.box_iou === "number" ? ` · box IoU ${scene.metrics.box_iou.toFixed(3)}` : "";
  return `${scene.file} · ${METHOD_NAMES[scene.method] || scene.method} · frames at ${scene.long_side} px${boxIou}`;
}

function showMetrics(metrics, splitNote, model) {
  const rows = metricRows(model.metrics);
  metrics.replaceChildren(
    ...(rows.length
      ? rows
      : [el("dt", {}, "Metrics"), el("dd", {}, "none recorded in the model file")]),
  );
  const split = model.split;
  splitNote.textContent =
    typeof split.test_images === "number"
      ? `Measured on ${split.test_images} held-out test images` +
        (split.kind ? ` (${split.kind} split, seed ${split.seed})` : "") +
        "."
      : "";
}

function metricName(key) {
  return METRIC_NAMES[key] || key.replaceAll("_", " ");
}

function isGroup(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** dt/dd pairs for a dict of figures. A dict of dicts (the figures of each collection) gets
 * a nested list, one row each; a dict of plain figures (those of one collection, or of the
 * novel signs) reads as one line. */
function metricRows(figures) {
  return Object.entries(figures).flatMap(([key, value]) => {
    const name = metricName(key);
    if (!isGroup(value)) return [el("dt", {}, name), el("dd", {}, formatMetric(key, value))];
    // A group takes the list's whole width, under its name: its figures are many.
    const shown = Object.values(value).some(isGroup)
      ? el("dl", { className: "facts nested" }, ...metricRows(value))
      : figureLine(value);
    return [el("dt", { className: "group" }, name), el("dd", { className: "group" }, shown)];
  });
}

/** A dict of plain figures as one line: "images 215 · accuracy 97.2% · …", leaving out those
 * not measured (null). */
function figureLine(figures) {
  const parts = Object.entries(figures)
    .filter(([, value]) => value !== null && value !== undefined)
    .map(([key, value]) => {
      const name = metricName(key);
      return `${name.charAt(0).toLowerCase()}${name.slice(1)} ${formatMetric(key, value)}`;
    });
  return parts.join(" · ") || "–";
}

/** One figure as text: shares as percentages, counts as integers, times as durations. */
function formatMetric(key, value) {
  if (value === null || value === undefined) return "–"; // not measured for this model
  if (typeof value === "string") return value;
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (Array.isArray(value)) return value.map((item) => formatMetric(key, item)).join(", ");
  if (isGroup(value)) return figureLine(value);
  if (typeof value !== "number") return String(value);
  if (key.endsWith("_seconds")) return duration(value);
  if (key.includes("accuracy") || key.endsWith("_rate")) return percent(value);
  return Number.isInteger(value) ? String(value) : value.toFixed(3);
}

function filterClasses(list, count, query) {
  const needle = query.trim().toLowerCase();
  let shown = 0;
  for (const item of list.children) {
    item.hidden = needle !== "" && !item.dataset.search.includes(needle);
    if (!item.hidden) shown += 1;
  }
  const total = list.children.length;
  if (!needle) count.textContent = `${total} classes`;
  else if (shown === 0) count.textContent = `No class matches “${query.trim()}”`;
  else count.textContent = `${shown} of ${total} classes match “${query.trim()}”`;
}
