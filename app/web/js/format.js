// Number formats shared by the views, so a confidence or a time reads the same everywhere.

export function percent(fraction, digits = 1) {
  return `${(fraction * 100).toFixed(digits)}%`;
}

export function milliseconds(ms) {
  return ms >= 100 ? `${Math.round(ms)} ms` : `${ms.toFixed(1)} ms`;
}

/** A duration in seconds as people say it: "12.3 s", "42 min 6 s", "3 h 5 min". */
export function duration(seconds) {
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const whole = Math.round(seconds);
  const hours = Math.floor(whole / 3600);
  const minutes = Math.floor((whole % 3600) / 60);
  return hours ? `${hours} h ${minutes} min` : `${minutes} min ${whole % 60} s`;
}

/** A small element factory: el("p", {className: "x", "aria-hidden": "true"}, "text", child)
 * keeps the DOM code short without ever parsing HTML: names from the service are inserted
 * as text only. Keys with a dash, and "role", are attributes; the rest are properties. */
export function el(tag, properties = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(properties)) {
    if (key.includes("-") || key === "role") element.setAttribute(key, value);
    else element[key] = value;
  }
  element.append(...children.filter((child) => child !== null && child !== undefined));
  return element;
}
