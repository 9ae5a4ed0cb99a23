// EXIF orientation of WebP pictures. The service reads every picture upright (EXIF applied)
// and places its boxes and masks on the upright picture; browsers show JPEG and PNG upright
// too, but Chromium shows a WebP as stored, ignoring its orientation. Such a preview would lie
// on its side (or upside down) under the boxes, so this module reads the orientation from the
// file and draws the preview upright itself, where the browser does not.

// A 2×1 lossless WebP whose EXIF orientation is 6 (turn 90° clockwise): a browser that applies
// WebP orientation shows it 1×2. Decoded once, so a browser that turns WebP pictures itself
// (a later Chromium, say) does not get them turned twice.
const PROBE =
  "data:image/webp;base64," +
  "UklGRlAAAABXRUJQVlA4WAoAAAAIAAAAAQAAAAAAVlA4TA8AAAAvAQAAAAcQ/Y/+ByKi/wEA" +
  "RVhJRhoAAABNTQAqAAAACAABARIAAwAAAAEABgAAAAAAAA==";
const ORIENTATION_TAG = 0x0112;
// A WebP has a handful of chunks; a file of thousands is not a picture worth reading.
const MAX_CHUNKS = 64;
const MAX_EXIF_BYTES = 64 * 1024;

let probe = null;

function browserTurnsWebp() {
  if (!probe) {
    probe = new Promise((resolve) => {
      const image = new Image();
      image.onload = () => resolve(image.naturalWidth === 1);
      // No WebP at all in this browser: its previews fail anyway, nothing to turn.
      image.onerror = () => resolve(true);
      image.src = PROBE;
    });
  }
  return probe;
}

function fourcc(view, offset) {
  return String.fromCharCode(...[0, 1, 2, 3].map((i) => view.getUint8(offset + i)));
}

async function bytesOf(file, start, end) {
  return new DataView(await file.slice(start, end).arrayBuffer());
}

/** The orientation (1-8) in a TIFF structure (an EXIF block), 1 when none or unreadable. */
function tiffOrientation(view) {
  try {
    // Some writers keep the JPEG APP1 prefix "Exif\0\0" in the WebP chunk too.
    const base = fourcc(view, 0) === "Exif" ? 6 : 0;
    const little = view.getUint16(base) === 0x4949; // "II"; "MM" is big-endian
    const ifd = base + view.getUint32(base + 4, little);
    const entries = view.getUint16(ifd, little);
    for (let i = 0; i < entries; i++) {
      const entry = ifd + 2 + i * 12;
      if (view.getUint16(entry, little) !== ORIENTATION_TAG) continue;
      const value = view.getUint16(entry + 8, little);
      return value >= 1 && value <= 8 ? value : 1;
    }
  } catch {
    // RangeError: a block cut short. The picture is then shown as stored.
  }
  return 1;
}

/** The EXIF orientation of a WebP file (1-8); 1 for any other file or without one. Reads
 * only the chunk headers and the EXIF chunk, not the picture. */
async function webpOrientation(file) {
  if (file.size < 12) return 1;
  const head = await bytesOf(file, 0, 12);
  if (fourcc(head, 0) !== "RIFF" || fourcc(head, 8) !== "WEBP") return 1;
  let offset = 12;
  for (let chunk = 0; chunk < MAX_CHUNKS && offset + 8 <= file.size; chunk++) {
    const header = await bytesOf(file, offset, offset + 8);
    const size = header.getUint32(4, true);
    if (fourcc(header, 0) === "EXIF") {
      const end = offset + 8 + Math.min(size, MAX_EXIF_BYTES);
      return tiffOrientation(await bytesOf(file, offset + 8, end));
    }
    offset += 8 + size + (size % 2); // chunks are padded to an even length
  }
  return 1;
}

// For each orientation, the canvas transform that draws the stored picture upright on a
// canvas of the upright size (w × h): x' = a·x + c·y + e, y' = b·x + d·y + f.
const UPRIGHT = {
  2: (w) => [-1, 0, 0, 1, w, 0], // mirrored
  3: (w, h) => [-1, 0, 0, -1, w, h], // upside down
  4: (w, h) => [1, 0, 0, -1, 0, h], // mirrored upside down
  5: () => [0, 1, 1, 0, 0, 0], // mirrored along the main diagonal
  6: (w) => [0, 1, -1, 0, w, 0], // stored turned 90° anticlockwise
  7: (w, h) => [0, -1, -1, 0, w, h], // mirrored along the other diagonal
  8: (w, h) => [0, -1, 1, 0, 0, h], // stored turned 90° clockwise
};

/** A canvas with `image` (loaded from `file`) drawn upright, when the file is a WebP with an
 * EXIF orientation that this browser does not apply; else null (the image is upright). */
export async function uprightPreview(file, image) {
  const orientation = await webpOrientation(file);
  if (orientation === 1 || (await browserTurnsWebp())) return null;
  const turned = orientation >= 5;
  const canvas = document.createElement("canvas");
  canvas.width = turned ? image.naturalHeight : image.naturalWidth;
  canvas.height = turned ? image.naturalWidth : image.naturalHeight;
  const context = canvas.getContext("2d");
  context.setTransform(...UPRIGHT[orientation](canvas.width, canvas.height));
  context.drawImage(image, 0, 0);
  return canvas;
}
