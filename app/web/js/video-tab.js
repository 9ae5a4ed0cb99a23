// The Video tab: a local video file or the webcam plays in a <video>; at the chosen rate the
// current frame is drawn to a canvas, sent as JPEG over WS /v1/stream, and each answer is
// drawn over the video as it arrives, with frames/s, latency and dropped frames. In scene
// mode every sign of the frame is drawn with its track id and class.

import { ApiError, describeError, streamUrl } from "./api.js";
import { duration, milliseconds, percent } from "./format.js";
import { createOverlay, signLabel } from "./overlay.js";

// Bigger frames are scaled down before sending: a close-up is read at a few dozen pixels, so
// this only bounds the JPEG encode and the upload, not the accuracy. A street scene keeps
// more: its signs are a few dozen pixels themselves.
const MAX_FRAME_WIDTH = { classify: 640, scene: 1280 };
const JPEG_QUALITY = 0.8;
// While the socket still holds this much unsent data, a new frame is not sent: it would only
// wait behind older ones. The service already keeps just the newest frame it has received.
const MAX_BUFFERED_BYTES = 256 * 1024;
const FPS_WINDOW_MS = 2000;
const LATENCY_SAMPLES = 20;
const TOP_K = 5;

// Why the service closed the socket, by WebSocket close code (see service/routes/stream.py).
// A handshake the service refuses (a wrong key, not ready, every stream taken) reaches a
// browser only as 1006: browsers hide the HTTP answer.
const CLOSE_REASONS = {
  1006: "The service refused or dropped the stream: it may need an API key (Settings), still be loading, or have every stream taken. Try again in a moment.",
  1008: "The service needs an API key for the stream (enter it under Settings).",
  1011: "This service cannot find signs in street scenes (it has no scene model): choose “One sign, close up”.",
  1013: "The model is still loading, or every stream is taken: try again in a moment.",
};

/** Sets up the Video tab in `panel`; returns `leave()`, for when the tab is hidden. */
export function initVideoTab(panel) {
  const video = panel.querySelector("#video");
  const stage = panel.querySelector("#video-stage");
  const fileInput = panel.querySelector("#video-input");
  const webcamButton = panel.querySelector("#video-webcam");
  const startButton = panel.querySelector("#video-start");
  const stopButton = panel.querySelector("#video-stop");
  const rateSelect = panel.querySelector("#video-rate");
  const modeSelect = panel.querySelector("#video-mode");
  const thresholdSelect = panel.querySelector("#video-threshold");
  const status = panel.querySelector("#video-status");
  const liveLabel = panel.querySelector("#video-label");
  const stats = {
    frames: panel.querySelector("#stat-frames"),
    fps: panel.querySelector("#stat-fps"),
    latency: panel.querySelector("#stat-latency"),
    dropped: panel.querySelector("#stat-dropped"),
  };
  const overlay = createOverlay(
    stage.querySelector(".mask-layer"),
    stage.querySelector(".box-layer"),
  );
  let webcam = null; // the MediaStream while the webcam is the source
  let fileUrl = null; // the object URL while a file is the source
  let stream = null; // the running stream session
  // Bumped whenever the source is released: a camera granted for an older Webcam click (the
  // permission prompt was still open when another source was chosen) is turned off at once.
  let sourceToken = 0;
  let cameraAsked = null; // the sourceToken of a camera request still waiting for an answer

  function setStatus(text) {
    status.textContent = text;
  }

  function setRunning(running) {
    startButton.disabled = running || !(fileUrl || webcam);
    stopButton.disabled = !running;
    rateSelect.disabled = running;
    modeSelect.disabled = running;
  }

  function releaseSource() {
    stop();
    sourceToken += 1;
    if (webcam) stopCamera(webcam);
    if (fileUrl) URL.revokeObjectURL(fileUrl);
    webcam = fileUrl = null;
    video.onloadeddata = null;
    video.removeAttribute("src");
    video.srcObject = null;
    stage.classList.remove("has-video");
    overlay.clear();
    liveLabel.textContent = "\u00a0";
  }

  function sourceReady(description) {
    if (!video.videoWidth || !video.videoHeight) {
      // An audio-only file plays in a <video> too, but has no frame to send.
      releaseSource();
      setRunning(false);
      setStatus(`${description} has no picture (is it a sound file?): choose a video file.`);
      return;
    }
    stage.style.setProperty("--aspect", String(video.videoWidth / video.videoHeight));
    stage.classList.add("has-video");
    setStatus(`${description} ready: press Start to send frames.`);
    setRunning(false);
  }

  function useFile(file) {
    if (!file) return;
    releaseSource();
    fileUrl = URL.createObjectURL(file);
    video.src = fileUrl;
    // A property, not a listener: a source replaced before it loaded must not report later.
    video.onloadeddata = () => sourceReady(`“${file.name}”`);
  }

  panel.querySelector("#video-pick").addEventListener("click", () => fileInput.click());
  fileInput.addEventListener("change", () => {
    const file = fileInput.files[0];
    fileInput.value = ""; // so that choosing the same file again still fires "change"
    useFile(file);
  });
  panel.addEventListener("drop", (event) => {
    const file = event.dataTransfer.files[0];
    if (file && file.type.startsWith("image/")) {
      // The clip already loaded stays: a photo dropped here was meant for the Images tab.
      setStatus(`“${file.name}” is a picture: drop it on the Images tab. This tab takes videos.`);
      return;
    }
    useFile(file);
  });
  video.addEventListener("error", () => {
    if (!fileUrl) return;
    // A file that played for a while and then broke is damaged or cut short, not of a kind
    // this browser cannot play.
    const playedTo = video.currentTime;
    releaseSource();
    setRunning(false);
    setStatus(
      playedTo > 0
        ? `The video could not be decoded past ${duration(playedTo)}: the file is damaged or cut short.`
        : "This browser cannot play that video file. Try an MP4 (H.264) or WebM file.",
    );
  });

  webcamButton.addEventListener("click", async () => {
    releaseSource();
    setRunning(false);
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      setStatus("The webcam needs a secure page: open it at http://localhost or over HTTPS.");
      return;
    }
    const token = sourceToken;
    cameraAsked = token;
    setStatus("Opening the camera…");
    let camera;
    try {
      camera = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    } catch (error) {
      if (token !== sourceToken) return; // another source was chosen meanwhile
      cameraAsked = null;
      setStatus(
        error.name === "NotAllowedError"
          ? "Permission to use the camera was refused."
          : `No camera could be opened (${error.message || error.name}).`,
      );
      return;
    }
    if (token !== sourceToken) {
      // Another source was chosen (or the tab left) while the browser asked for permission:
      // this camera is nobody's, so it goes off rather than staying on unseen.
      stopCamera(camera);
      return;
    }
    cameraAsked = null;
    webcam = camera;
    video.srcObject = webcam;
    video.onloadeddata = () => sourceReady("Webcam");
    // A live preview before Start: the camera is on anyway.
    video.play().catch((error) => setStatus(`The camera preview cannot play: ${error.message}`));
  });

  function start() {
    if (stream) return;
    if (video.ended) video.currentTime = 0;
    // On a phone the controls fill the first screen: bring the video and its answers in.
    stage.scrollIntoView({ block: "nearest", behavior: "smooth" });
    overlay.clear();
    resetStats(stats);
    setRunning(true);
    setStatus("Connecting…");
    const mode = modeSelect.value;
    const what = mode === "scene" ? " (street scene: every sign, tracked)" : "";
    const streaming = `Streaming at ${rateSelect.value} frames/s${what}.`;
    let frameFailed = false; // the status tells of a failed frame
    stream = openStream(video, Number(rateSelect.value), mode, {
      onOpen() {
        video.play().catch((error) => setStatus(`The video cannot play: ${error.message}`));
        setStatus(streaming);
      },
      onAnswer(message, counters) {
        // One failed frame is passing news: once frames are read again, say so.
        if (frameFailed) {
          frameFailed = false;
          setStatus(streaming);
        }
        const threshold = Number(thresholdSelect.value);
        if (message.signs) {
          // A street scene: every sign at or above the threshold, with its track id.
          const shown = message.signs.filter((sign) => sign.confidence >= threshold);
          overlay.show({ ...message, signs: shown });
          const hidden = message.signs.length - shown.length;
          liveLabel.textContent =
            (shown.length ? shown.map(signLabel).join(" · ") : "No sign") +
            (hidden ? ` (${hidden} below ${percent(threshold, 0)})` : "");
          showStats(stats, counters);
          return;
        }
        // The model reads one sign that fills the picture; on a wide street scene it still
        // names a class, with low confidence. The threshold (changeable while streaming)
        // keeps such guesses off the video while still saying what they were.
        const guess = `${message.class_name} · ${percent(message.confidence, 0)}`;
        if (message.kind === "no_sign") {
          overlay.clear();
          liveLabel.textContent = `No sign (${percent(message.confidence, 0)})`;
        } else if (message.confidence >= threshold) {
          overlay.show(message);
          liveLabel.textContent = guess;
        } else {
          overlay.clear();
          liveLabel.textContent = `No sign above ${percent(threshold, 0)} (best guess: ${guess})`;
        }
        showStats(stats, counters);
      },
      onFrameError(message) {
        const { title, detail } = describeError(
          new ApiError(0, message.error.code, message.error.message),
        );
        setStatus(`Frame ${message.frame_id ?? ""} not read: ${title} (${detail})`);
        frameFailed = true;
      },
      onClose(reason) {
        stream = null;
        setRunning(false);
        video.pause();
        setStatus(reason);
      },
    });
  }

  function stop() {
    if (stream) stream.close("Stopped.");
  }

  startButton.addEventListener("click", start);
  stopButton.addEventListener("click", stop);
  video.addEventListener("ended", () => {
    if (stream) stream.close("The video ended.");
  });

  // The tab was hidden: nothing streams or films unseen, with its Stop button out of sight
  // and one of the service's streams held. A chosen file stays, ready for Start; the camera
  // goes off (its light would stay on), and the Webcam button turns it on again.
  return function leave() {
    if (webcam || cameraAsked === sourceToken) {
      releaseSource();
      setRunning(false);
      setStatus(
        "The webcam was turned off on leaving the Video tab: press Webcam to turn it on again.",
      );
    } else if (stream) {
      stream.close("Stopped on leaving the Video tab: press Start to go on.");
    }
  };
}

function stopCamera(camera) {
  for (const track of camera.getTracks()) track.stop();
}

/** One streaming session over WS /v1/stream. Calls back with every answer and the running
 * counters; `close(reason)` ends it, and so does the service closing the socket. */
function openStream(video, rate, mode, callbacks) {
  const socket = new WebSocket(streamUrl({ topK: TOP_K, mode }));
  const capture = document.createElement("canvas");
  const sentAt = new Map(); // frame_id -> performance.now() when its pixels were taken
  const counters = { answered: 0, skipped: 0, droppedByService: 0, answerTimes: [], latencies: [] };
  let nextFrameId = 0;
  let encoding = false;
  let timer = null;
  let closed = false;

  async function sendFrame() {
    if (video.paused || video.readyState < HTMLMediaElement.HAVE_CURRENT_DATA) return;
    if (!video.videoWidth) return; // no picture (yet) to send
    if (encoding || socket.bufferedAmount > MAX_BUFFERED_BYTES) {
      counters.skipped += 1;
      return;
    }
    encoding = true;
    try {
      const scale = Math.min(1, MAX_FRAME_WIDTH[mode] / video.videoWidth);
      capture.width = Math.round(video.videoWidth * scale);
      capture.height = Math.round(video.videoHeight * scale);
      capture.getContext("2d").drawImage(video, 0, 0, capture.width, capture.height);
      const takenAt = performance.now();
      const jpeg = await new Promise((resolve) =>
        capture.toBlob(resolve, "image/jpeg", JPEG_QUALITY),
      );
      if (!jpeg || socket.readyState !== WebSocket.OPEN) return;
      const frameId = nextFrameId++;
      sentAt.set(frameId, takenAt);
      // The id message and its frame go out back to back: the service pairs them in order.
      socket.send(JSON.stringify({ frame_id: frameId }));
      socket.send(jpeg);
    } finally {
      encoding = false;
    }
  }

  socket.addEventListener("open", () => {
    callbacks.onOpen();
    timer = setInterval(sendFrame, 1000 / rate);
  });

  socket.addEventListener("message", (event) => {
    if (closed) return;
    const message = JSON.parse(event.data);
    const now = performance.now();
    const takenAt = sentAt.get(message.frame_id);
    // Frames the service dropped are never answered: forget them along with this one.
    for (const id of sentAt.keys()) if (id <= message.frame_id) sentAt.delete(id);
    if (message.dropped) counters.droppedByService = message.dropped.total;
    if (message.error) {
      callbacks.onFrameError(message);
      return;
    }
    if (message.frame_id === undefined) return; // not an answer to a frame
    counters.answered += 1;
    counters.answerTimes.push(now);
    while (now - counters.answerTimes[0] > FPS_WINDOW_MS) counters.answerTimes.shift();
    if (takenAt !== undefined) {
      counters.latencies.push(now - takenAt);
      if (counters.latencies.length > LATENCY_SAMPLES) counters.latencies.shift();
    }
    callbacks.onAnswer(message, counters);
  });

  // Ends the session once, whoever ends it first: the page (a new source must not hear
  // about the old socket closing later) or the service.
  function finish(reason) {
    if (closed) return;
    closed = true;
    clearInterval(timer);
    callbacks.onClose(reason);
  }

  socket.addEventListener("close", (event) => {
    finish(
      CLOSE_REASONS[event.code] ||
        `The connection to the service was lost${event.reason ? `: ${event.reason}` : "."}`,
    );
  });

  return {
    close(reason) {
      socket.close(1000);
      finish(reason);
    },
  };
}

function resetStats(stats) {
  stats.frames.textContent = "0";
  stats.fps.textContent = "0.0";
  stats.latency.textContent = "–";
  stats.dropped.textContent = "0";
}

function showStats(stats, counters) {
  const times = counters.answerTimes;
  const span = times[times.length - 1] - times[0];
  const fps = times.length > 1 && span > 0 ? ((times.length - 1) * 1000) / span : 0;
  const latency = counters.latencies.reduce((sum, ms) => sum + ms, 0) / counters.latencies.length;
  stats.frames.textContent = String(counters.answered);
  stats.fps.textContent = fps.toFixed(1);
  stats.latency.textContent = Number.isFinite(latency) ? milliseconds(latency) : "–";
  // Both kinds of loss: frames the service replaced by newer ones before reading them, and
  // frames this page did not send because the previous one was still on its way.
  stats.dropped.textContent = String(counters.droppedByService + counters.skipped);
}
