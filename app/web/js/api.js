// The service's public API, as the page uses it. Every call goes to the page's own origin,
// so the page works wherever the service is mounted, with no configuration.

// Masks come as COCO RLE rather than PNG: the counts decode synchronously into canvas
// pixels (overlay.js), where a PNG would need an image decode per frame in the video tab.
const MASK_FORMAT = "rle";
const API_KEY_STORAGE = "greedysign.apiKey";

/** A failed call, with the service's error code and message (or our own for network faults). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

// The key lives in sessionStorage: it is a secret, so it should not outlive the tab.
export function getApiKey() {
  return sessionStorage.getItem(API_KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(API_KEY_STORAGE, key);
  else sessionStorage.removeItem(API_KEY_STORAGE);
}

function authHeaders() {
  const key = getApiKey();
  return key ? { "X-API-Key": key } : {};
}

/** fetch + JSON, turning every failure into an ApiError with a readable message. */
async function requestJson(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: { ...authHeaders(), ...options.headers } });
  } catch (error) {
    // A request the page cancelled (options.signal) is not a fault of the service: the
    // caller hears the AbortError itself and says nothing.
    if (error.name === "AbortError") throw error;
    throw troubled(new ApiError(0, "network_error", `Could not reach the service at ${location.origin}.`));
  }
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    if (error.name === "AbortError") throw error;
    // A proxy's HTML error page, say: fall through to the status line below.
  }
  if (!response.ok) {
    const error = body && body.error;
    throw troubled(
      new ApiError(
        response.status,
        error ? error.code : `http_${response.status}`,
        error ? error.message : `${response.status} ${response.statusText}`,
      ),
    );
  }
  return body;
}

// Answers that say the service as a whole is gone or now wants a key, whatever was asked:
// the header's status, loaded once, is told (a "service-trouble" event) so it can look again.
const SERVICE_TROUBLE = new Set(["network_error", "unauthorized"]);

function troubled(error) {
  if (SERVICE_TROUBLE.has(error.code)) window.dispatchEvent(new CustomEvent("service-trouble"));
  return error;
}

/** POST /v1/predict for one file: class, top-k, box, mask (RLE) and timings. `signal` (an
 * AbortSignal) cancels it: the promise then rejects with an AbortError. */
export function predictImage(file, { topK = 5, signal } = {}) {
  const form = new FormData();
  form.append("file", file, file.name);
  const query = new URLSearchParams({ top_k: topK, mask_format: MASK_FORMAT });
  return requestJson(`/v1/predict?${query}`, { method: "POST", body: form, signal });
}

/** POST /v1/detect for one file: every sign of a street scene, each with box, mask (RLE),
 * class and scores. `signal` cancels it, as for predictImage. */
export function detectImage(file, { signal } = {}) {
  const form = new FormData();
  form.append("file", file, file.name);
  const query = new URLSearchParams({ mask_format: MASK_FORMAT });
  return requestJson(`/v1/detect?${query}`, { method: "POST", body: form, signal });
}

/** GET /v1/model: method, architecture, classes, image size, measured metrics. */
export function getModel() {
  return requestJson("/v1/model");
}

/** The URL of WS /v1/stream. Browsers cannot set headers on a WebSocket, so the key (if
 * any) goes in the query, which the service accepts for exactly this reason. */
export function streamUrl({ topK = 5, mode = "classify" } = {}) {
  const url = new URL("/v1/stream", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("mode", mode);
  url.searchParams.set("top_k", topK);
  url.searchParams.set("mask_format", MASK_FORMAT);
  const key = getApiKey();
  if (key) url.searchParams.set("api_key", key);
  return url.href;
}

// Titles for the service's error codes, written for the person looking at the page; the
// service's own message follows as the detail.
const ERROR_TITLES = {
  unsupported_media_type: "Not an image the service can read",
  invalid_image: "The image file is damaged or cut short",
  empty_file: "The file is empty",
  image_too_large: "The image has too many pixels",
  image_too_small: "The image is too small",
  payload_too_large: "The file is too large",
  unauthorized: "The service needs an API key (enter it under Settings)",
  not_ready: "The model is still loading: try again in a moment",
  overloaded: "The service is busy: try again in a moment",
  timeout: "The service took too long to answer",
  request_timeout: "The upload stalled, and the service stopped waiting for it",
  inference_failed: "The model failed on this picture (a fault in the service)",
  internal_error: "The service met an internal error",
  invalid_message: "The service did not understand a message from this page",
  invalid_video: "The video file is damaged or cannot be read",
  bad_request: "The request was not accepted",
  not_found: "The service has no such address (is it an older version?)",
  network_error: "The service cannot be reached",
  validation_error: "The request was not accepted",
  no_scene_model: "This service cannot find signs in street scenes (it has no scene model)",
};

/** {title, detail} for any error thrown by the calls above (or anything else). */
export function describeError(error) {
  if (error instanceof ApiError) {
    // Errors inside the stream come without an HTTP status: name their code instead.
    const fallback = error.status
      ? `The service answered ${error.status}`
      : `The service reported “${error.code}”`;
    const title = ERROR_TITLES[error.code] || fallback;
    return { title, detail: error.message, code: error.code };
  }
  return { title: "Something went wrong in the page", detail: String(error), code: "page_error" };
}
