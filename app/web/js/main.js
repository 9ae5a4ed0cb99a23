// Start-up: the tabs, the API key setting, and the three views.

import { getApiKey, setApiKey } from "./api.js";
import { initImageTab } from "./image-tab.js";
import { initModelPanel } from "./model-panel.js";
import { initVideoTab } from "./video-tab.js";

/** ARIA tabs (the WAI-ARIA Authoring Practices pattern): arrow keys, Home and End move
 * between tabs; the URL hash names the open tab, so a link or a reload opens the same one.
 * `onHide` maps a panel's id to a function called when that panel is hidden. */
function initTabs(tablist, onHide = {}) {
  const tabs = [...tablist.querySelectorAll('[role="tab"]')];

  function select(tab, { focus = false } = {}) {
    for (const other of tabs) {
      const selected = other === tab;
      other.setAttribute("aria-selected", String(selected));
      other.tabIndex = selected ? 0 : -1;
      const panel = document.getElementById(other.getAttribute("aria-controls"));
      const leaving = !panel.hidden && !selected;
      panel.hidden = !selected;
      if (leaving && onHide[panel.id]) onHide[panel.id]();
    }
    if (focus) tab.focus();
    history.replaceState(null, "", `#${tab.id.replace("tab-", "")}`);
  }

  tablist.addEventListener("click", (event) => {
    const tab = event.target.closest('[role="tab"]');
    if (tab) select(tab);
  });
  tablist.addEventListener("keydown", (event) => {
    const index = tabs.indexOf(document.activeElement);
    const moves = {
      ArrowLeft: index - 1,
      ArrowRight: index + 1,
      Home: 0,
      End: tabs.length - 1,
    };
    if (index < 0 || !(event.key in moves)) return;
    event.preventDefault();
    select(tabs[(moves[event.key] + tabs.length) % tabs.length], { focus: true });
  });

  const fromHash = document.getElementById(`tab-${location.hash.slice(1)}`);
  if (fromHash && tabs.includes(fromHash)) select(fromHash);
}

function initApiKeyForm(form, onSaved) {
  const input = form.querySelector("#api-key");
  input.value = getApiKey();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey(input.value.trim());
    onSaved();
  });
}

// A file dropped where no view takes it would make the browser open it in place of the page.
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());

initImageTab(document.getElementById("panel-image"));
const leaveVideo = initVideoTab(document.getElementById("panel-video"));
// After the views, so that the tab the URL names opens on views ready for it.
initTabs(document.querySelector('[role="tablist"]'), { "panel-video": leaveVideo });
const reloadModel = initModelPanel(
  document.getElementById("panel-model"),
  document.getElementById("model-summary"),
);
initApiKeyForm(document.getElementById("api-key-form"), reloadModel);
