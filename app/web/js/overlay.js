// Drawing a prediction over a picture or a playing video: one sign (/v1/predict), or every
// sign of a scene (/v1/detect, the stream in scene mode), each with its box and label.
//
// Two stacked canvases sit over the media, both stretched to its box by CSS:
//  - the mask layer has the prediction's own pixel size, so each mask pixel is one canvas
//    pixel (exact, and the browser's scaling smooths the edge like the picture's);
//  - the box layer has the size it is displayed at (times devicePixelRatio), so the box
//    lines and the label stay sharp however small the original image is.

// Green is far from the signs' red, blue, yellow and white: a light fill shows the sign
// through it, and an opaque edge shows exactly where the mask ends.
const MASK_FILL = [60, 255, 130, 90];
const MASK_EDGE = [60, 255, 130, 240];
const BOX_COLOR = "#ffd21f";
// A sign of none of the model's classes: shown, in grey, so that it reads as "not known".
const UNKNOWN_BOX_COLOR = "#c8c8c8";
const BOX_OUTLINE = "rgba(0, 0, 0, 0.75)";
const LABEL_TEXT = "#111";

/** COCO RLE counts (column-major, starting with a background run) -> row-major 0/1 bytes. */
export function decodeRle(counts, height, width) {
  const pixels = new Uint8Array(height * width);
  let position = 0;
  for (let run = 0; run < counts.length; run++) {
    const end = position + counts[run];
    if (run % 2 === 1) {
      for (let p = position; p < end; p++) {
        const column = Math.floor(p / height);
        pixels[(p - column * height) * width + column] = 1;
      }
    }
    position = end;
  }
  return pixels;
}

/** Paints the union of `masks` (each {size, data}: RLE over the whole image), or clears. */
function paintMasks(canvas, masks) {
  const context = canvas.getContext("2d");
  if (!masks.length) {
    context.clearRect(0, 0, canvas.width, canvas.height);
    return;
  }
  const [height, width] = masks[0].size;
  canvas.width = width; // resizing also clears
  canvas.height = height;
  const sign = new Uint8Array(height * width);
  for (const mask of masks) {
    const one = decodeRle(mask.data, height, width);
    for (let i = 0; i < one.length; i++) sign[i] |= one[i];
  }
  const image = context.createImageData(width, height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      if (!sign[i]) continue;
      // An edge pixel has a background (or out-of-picture) pixel beside it.
      const edge =
        x === 0 || y === 0 || x === width - 1 || y === height - 1 ||
        !sign[i - 1] || !sign[i + 1] || !sign[i - width] || !sign[i + width];
      image.data.set(edge ? MASK_EDGE : MASK_FILL, i * 4);
    }
  }
  context.putImageData(image, 0, 0);
}

/** Draws each item ({box, kind, text}) of a picture of `imageSize` ([height, width]): every
 * box first, then the labels, each where it covers the fewest labels and boxes already there
 * (a scene's signs stand close: drawn in turn, one sign's label hid the next sign). */
function paintBoxes(canvas, imageSize, items) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
  const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
  canvas.width = width;
  canvas.height = height;
  if (!imageSize || !items.length) return;
  const context = canvas.getContext("2d");
  const [imageHeight, imageWidth] = imageSize;
  const sx = width / imageWidth;
  const sy = height / imageHeight;
  const boxes = items.map((item) => {
    const [x1, y1, x2, y2] = item.box;
    return { left: x1 * sx, top: y1 * sy, width: (x2 - x1) * sx, height: (y2 - y1) * sy };
  });
  const colors = items.map((item) => (item.kind === "unknown_sign" ? UNKNOWN_BOX_COLOR : BOX_COLOR));

  context.lineJoin = "round";
  boxes.forEach((box, index) => {
    // A dark outline under the colored line keeps the box visible on any background.
    context.strokeStyle = BOX_OUTLINE;
    context.lineWidth = 4 * ratio;
    context.strokeRect(box.left, box.top, box.width, box.height);
    context.strokeStyle = colors[index];
    context.lineWidth = 2 * ratio;
    context.strokeRect(box.left, box.top, box.width, box.height);
  });

  const fontSize = Math.round(12 * ratio);
  context.font = `600 ${fontSize}px system-ui, sans-serif`;
  context.textBaseline = "middle";
  const padding = 4 * ratio;
  const labelHeight = fontSize + 2 * padding;
  const placed = [];
  items.forEach((item, index) => {
    const box = boxes[index];
    const labelWidth = Math.min(width, context.measureText(item.text).width + 2 * padding);
    const left = Math.min(Math.max(0, box.left - 1 * ratio), width - labelWidth);
    // Above the box, just inside its top edge, below it, or stacked on a label already
    // there (where signs stand close, every spot near the box may be taken); never off the
    // canvas.
    const tops = [
      box.top - labelHeight,
      box.top,
      box.top + box.height,
      ...placed.flatMap((rect) => [rect.top + rect.height, rect.top - labelHeight]),
    ].map((top) => Math.min(Math.max(0, top), height - labelHeight));
    const cost = (top) => {
      const label = { left, top, width: labelWidth, height: labelHeight };
      const others = boxes.filter((_, other) => other !== index);
      return (
        10 * placed.reduce((sum, rect) => sum + overlap(label, rect), 0) +
        others.reduce((sum, rect) => sum + overlap(label, rect), 0)
      );
    };
    const top = tops.reduce((best, candidate) => (cost(candidate) < cost(best) ? candidate : best));
    placed.push({ left, top, width: labelWidth, height: labelHeight });
    context.fillStyle = colors[index];
    context.fillRect(left, top, labelWidth, labelHeight);
    context.fillStyle = LABEL_TEXT;
    context.fillText(item.text, left + padding, top + labelHeight / 2, labelWidth - 2 * padding);
  });
}

/** The area two rectangles ({left, top, width, height}) share. */
function overlap(a, b) {
  const across = Math.min(a.left + a.width, b.left + b.width) - Math.max(a.left, b.left);
  const down = Math.min(a.top + a.height, b.top + b.height) - Math.max(a.top, b.top);
  return Math.max(0, across) * Math.max(0, down);
}

/** The label of a sign: its track id in a tracked scene, its class and confidence. */
export function signLabel(sign) {
  const track = sign.track_id !== undefined ? `#${sign.track_id} ` : "";
  return `${track}${sign.class_name} ${Math.round(sign.confidence * 100)}%`;
}

/** What to draw for an answer: every sign of a scene, or the one sign of a prediction. */
function drawn(answer) {
  if (!answer) return { masks: [], items: [], size: null };
  if (answer.signs) {
    return {
      masks: answer.signs.map((sign) => sign.mask).filter(Boolean),
      items: answer.signs.map((sign) => ({ box: sign.box, kind: sign.kind, text: signLabel(sign) })),
      size: answer.image_size,
    };
  }
  const text = `${answer.class_name} ${Math.round(answer.confidence * 100)}%`;
  return {
    masks: answer.mask ? [answer.mask] : [],
    items: answer.box ? [{ box: answer.box, kind: answer.kind, text }] : [],
    size: answer.image_size,
  };
}

/** The overlay of one picture or video: `show(answer)` draws a prediction or a scene's
 * signs, `clear()` removes them. It redraws the box layer when its element is resized (a
 * narrower window, a rotated phone), which is the state this object exists to keep. */
export function createOverlay(maskCanvas, boxCanvas) {
  let current = drawn(null);
  const observer = new ResizeObserver(() => paintBoxes(boxCanvas, current.size, current.items));
  observer.observe(boxCanvas);
  return {
    show(answer) {
      if (!answer.signs && answer.kind === "no_sign") {
        this.clear(); // the model says there is no sign: nothing to outline
        return;
      }
      current = drawn(answer);
      paintMasks(maskCanvas, current.masks);
      paintBoxes(boxCanvas, current.size, current.items);
    },
    clear() {
      current = drawn(null);
      paintMasks(maskCanvas, []);
      paintBoxes(boxCanvas, null, []);
    },
    disconnect() {
      observer.disconnect();
    },
  };
}
