// The Model tab and the one-line summary in the header: what GET /v1/model says about the
// served model, and its class list with a search box.

import { describeError, getModel } from "./api.js";
import { el, percent } from "./format.js";

// While the service starts (or is unreachable) the page asks again on its own, so a page
// opened before `greedysign serve` finished loading fills in by itself.
const RETRY_MS = 2000;
const RETRIED_CODES = new Set(["not_ready", "overloaded", "network_error"]);

const METHOD_NAMES = {
  "greedy-dib": "Greedy-DIB (module by module, with an information-bottleneck term)",
  "greedy-ce": "Greedy (module by module, cross-entropy only)",
  sgd: "End-to-end SGD (baseline)",
};

const METRIC_NAMES = {
  accuracy: "Accuracy",
  macro_accuracy: "Mean per-class accuracy",
  box_iou: "Box IoU",
  mask_miou: "Mask mIoU",
};

/** Loads /v1/model into `panel` and `summary`; returns a function that loads it again. */
export function initModelPanel(panel, summary) {
  const search = panel.querySelector("#class-search");
  const list = panel.querySelector("#class-list");
  const count = panel.querySelector("#class-count");
  const errorBox = panel.querySelector("#model-error");
  let retryTimer = null;

  search.addEventListener("input", () => filterClasses(list, count, search.value));

  async function load() {
    clearTimeout(retryTimer);
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
    }
  }

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
  ];
  facts.replaceChildren(...rows.flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, value)]));
}

function showMetrics(metrics, splitNote, model) {
  const rows = Object.entries(model.metrics).map(([key, value]) => [
    METRIC_NAMES[key] || key.replaceAll("_", " "),
    formatMetric(key, value),
  ]);
  metrics.replaceChildren(
    ...(rows.length ? rows : [["Metrics", "none recorded in the model file"]]).flatMap(
      ([name, value]) => [el("dt", {}, name), el("dd", {}, value)],
    ),
  );
  const split = model.split;
  splitNote.textContent =
    typeof split.test_images === "number"
      ? `Measured on ${split.test_images} held-out test images` +
        (split.kind ? ` (${split.kind} split, seed ${split.seed})` : "") +
        "."
      : "";
}

function formatMetric(key, value) {
  if (typeof value !== "number") return typeof value === "string" ? value : JSON.stringify(value);
  return key.includes("accuracy") ? percent(value) : value.toFixed(3);
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
