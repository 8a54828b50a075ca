// Quick exit: hides the page at once, then replaces it with the site's neutral page,
// using location.replace so Back does not return to the chat. Inside the embed
// iframe the top window is replaced instead. Chromium lets a cross-origin iframe
// navigate the top window only during a user gesture, so the embed loader, which
// runs in the top window, is asked to do it as well.

const SHIFT_PRESSES = 3;
const SHIFT_WINDOW_MS = 1_000; // the three presses must fall within this time

const link = document.getElementById("quick-exit");
const exitUrl = link?.href;
let shiftTimes = [];

function leave(event) {
  event?.preventDefault();
  document.documentElement.hidden = true;
  document.title = "";
  try {
    sessionStorage.clear();
  } catch {
    // Storage is switched off, so it contains nothing to clear.
  }
  if (window.top === window) {
    location.replace(exitUrl);
    return;
  }
  window.parent.postMessage({ type: "vso-exit", url: exitUrl }, "*");
  try {
    window.top.location.replace(exitUrl);
  } catch {
    // Without a user gesture the top window is out of reach; leave the frame at least.
    location.replace(exitUrl);
  }
}

function countShift(event) {
  if (event.key !== "Shift" || event.repeat) return;
  shiftTimes = shiftTimes.filter((time) => event.timeStamp - time < SHIFT_WINDOW_MS);
  shiftTimes.push(event.timeStamp);
  if (shiftTimes.length >= SHIFT_PRESSES) leave(null);
}

if (link && exitUrl) {
  link.addEventListener("click", leave);
  document.addEventListener("keydown", countShift, true);
}
