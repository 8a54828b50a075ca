// Visitor side of the chat page. It talks to the relay over one WebSocket, using the
// frames described in docs/protocol.md, and shows the page state that matches them.
// Message bodies come from other people, so text only ever enters the DOM through
// textContent.

import { buildResourceCard, isResourceCard } from "/static/card.js";
import { appendLinkedText, readJsonBlock, translator } from "/static/text.js";

const STORAGE_KEY = "vso-chat"; // sessionStorage key of the conversation token
// The protocol's limit, in code points after trimming. NOTE: VSO_MAX_MESSAGE_CHARS can
// change the relay's limit, and then the relay's message_too_long error is the check.
const MAX_MESSAGE_CHARS = 4000;
const COUNTER_FROM_CHARS = 3500; // the character counter appears from this length on
const CHECK_INTERVAL_MS = 5_000;
const PING_INTERVAL_MS = 25_000;
const IDLE_TIMEOUT_MS = 60_000;
const PING_GRACE_MS = 10_000;
const CONNECT_TIMEOUT_MS = 20_000;
const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 15_000;
const SLOW_RECONNECT_ATTEMPTS = 4; // after this many failures the status line suggests checking the network
const STORAGE_RETRY_DELAYS_MS = [1_000, 2_000, 4_000, 8_000, 15_000];
const CLIENT_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

// Texts in the page's language. The page carries them in the JSON block #chat-text,
// keyed by the English text that _() receives; the relay fills it from this file's
// _() calls, so every text here is a literal string.
const _ = translator(readJsonBlock("chat-text"));

const ENDED_REASON_TEXTS = {
  visitor: _("You ended the chat."),
  volunteer: _("The volunteer ended the chat."),
  abandoned: _("The chat was closed because the connection was lost for too long."),
};
// The labels of a resource card's details; card.js shows them as given.
const CARD_LABELS = {
  phone: _("Phone"),
  email: _("E-mail"),
  hours: _("Hours"),
  website: _("Website"),
  link: _("Read more"),
};
const GENERIC_ERROR_TEXT = _("Something went wrong. Please try again.");
const EMPTY_MESSAGE_TEXT = _("Please write a message before sending.");
const TOO_LONG_TEXT = _("That message is too long. Please shorten it to %(max)s characters or fewer.", {
  max: formatNumber(MAX_MESSAGE_CHARS),
});

const dom = {
  chat: getElement("chat"),
  endButton: getElement("end-button"),
  connectionStatus: getElement("connection-status"),
  resumingState: getElement("resuming-state"),
  welcomeState: getElement("welcome-state"),
  welcomeUnavailable: getElement("welcome-unavailable"),
  startForm: getElement("start-form"),
  startButton: getElement("start-button"),
  unavailableState: getElement("unavailable-state"),
  availableAgain: getElement("available-again"),
  retryForm: getElement("retry-form"),
  retryButton: getElement("retry-button"),
  waitingState: getElement("waiting-state"),
  waitingText: getElement("waiting-text"),
  queueLine: getElement("queue-line"),
  requeuedText: getElement("requeued-text"),
  waitingUnavailable: getElement("waiting-unavailable"),
  chattingState: getElement("chatting-state"),
  volunteerHeading: getElement("volunteer-heading"),
  continuedText: getElement("continued-text"),
  transcript: getElement("transcript"),
  endedState: getElement("ended-state"),
  endedReason: getElement("ended-reason"),
  newChatForm: getElement("new-chat-form"),
  newChatButton: getElement("new-chat-button"),
  deleteControls: getElement("delete-controls"),
  deleteButton: getElement("delete-button"),
  deleteConfirm: getElement("delete-confirm"),
  deleteYes: getElement("delete-yes"),
  deleteNo: getElement("delete-no"),
  deletedText: getElement("deleted-text"),
  feedbackForm: getElement("feedback-form"),
  feedbackToken: getElement("feedback-token"),
  feedbackThanks: getElement("feedback-thanks"),
  errorText: getElement("error-text"),
  form: getElement("message-form"),
  input: getElement("message-input"),
  counter: getElement("message-counter"),
  footer: getElement("chat-footer"),
  offlineState: getElement("offline-state"),
  leaveForm: getElement("leave-message-form"),
  leaveBody: getElement("leave-message-body"),
  leaveChatToken: getElement("leave-message-chat-token"),
};

const state = {
  wsUrl: dom.chat.dataset.wsUrl,
  socket: null,
  everConnected: false,
  connectStartedAt: 0,
  lastFrameAt: 0,
  lastPingAt: 0,
  failedAttempts: 0, // reset by the first frame on a new socket
  reconnectTimer: null,
  // One of "resuming", "welcome", "unavailable", "waiting", "chatting", "ended".
  phase: "welcome",
  volunteersAvailable: null, // from the last status frame; null before the first one
  // False outside the site's opening hours, as the page was rendered.
  withinHours: dom.chat.dataset.withinHours !== "false",
  carriedOver: false, // the waiting chat's text went into the message form
  startRequested: false, // `start` is sent on every new socket until started or unavailable arrives
  token: null,
  // The ended chat's token, kept in memory only so "Delete this conversation" can
  // prove the chat is the visitor's; null once deleted or on a new chat.
  deleteToken: null,
  deleting: false,
  ending: false, // the visitor pressed "End chat" and the relay has not confirmed it yet
  requeued: false,
  continued: false, // another volunteer took over the running chat
  queuePosition: null,
  volunteerName: "",
  messages: new Map(), // seq -> rendered message element
  lastSeq: 0, // every seq from 1 to lastSeq is rendered
  pending: new Map(), // client_id -> {body, item, failures, retryTimer}, in the order sent
};

function getElement(id) {
  const element = document.getElementById(id);
  if (!element) throw new Error(`The chat page has no element with id "${id}".`);
  return element;
}

function formatNumber(number) {
  return number.toLocaleString(document.documentElement.lang || "en");
}

// ---- Connection ----

function connect() {
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
  if (state.socket) return;
  let socket;
  try {
    socket = new WebSocket(state.wsUrl);
  } catch (error) {
    console.error(`Opening a WebSocket to ${state.wsUrl} failed:`, error);
    scheduleReconnect();
    return;
  }
  socket.addEventListener("open", handleOpen);
  socket.addEventListener("message", handleSocketMessage);
  socket.addEventListener("close", handleClose);
  state.socket = socket;
  state.connectStartedAt = Date.now();
}

function shouldReconnect() {
  return state.phase !== "ended" || state.ending || state.deleting;
}

// Waits a random time between half and all of min(15 s, 0.5 s * 2^failures), so that
// visitors cut off together do not all reconnect at the same moment.
function scheduleReconnect() {
  clearTimeout(state.reconnectTimer);
  const ceiling = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** state.failedAttempts);
  const delay = ceiling / 2 + (Math.random() * ceiling) / 2;
  state.failedAttempts += 1;
  state.reconnectTimer = setTimeout(connect, delay);
}

function reconnectNow() {
  if (state.socket || state.reconnectTimer === null) return;
  state.failedAttempts = 0;
  connect();
}

// Closes the current socket without waiting for its close event. Handlers ignore
// events from a socket that is no longer state.socket.
function dropSocket(reconnect) {
  const socket = state.socket;
  if (!socket) return;
  state.socket = null;
  socket.close();
  if (reconnect && shouldReconnect()) scheduleReconnect();
  renderConnectionStatus();
}

function sendFrame(frame) {
  const socket = state.socket;
  if (!socket || socket.readyState !== WebSocket.OPEN) return false;
  socket.send(JSON.stringify(frame));
  return true;
}

function handleOpen(event) {
  if (event.target !== state.socket) return;
  state.everConnected = true;
  state.lastFrameAt = state.lastPingAt = Date.now();
  if (state.token) {
    // The relay handles frames in order, so the resent messages and the end arrive
    // after the resume has re-attached the conversation.
    sendFrame({ type: "resume", token: state.token, last_seq: state.lastSeq });
    for (const clientId of state.pending.keys()) sendPendingMessage(clientId);
    if (state.ending) sendFrame({ type: "end" });
  } else if (state.startRequested) {
    sendFrame({ type: "start" });
  } else if (state.deleting && state.deleteToken) {
    sendFrame({ type: "delete", token: state.deleteToken });
  }
  renderConnectionStatus();
}

function handleClose(event) {
  if (event.target !== state.socket) return;
  state.socket = null;
  console.info(`The chat connection closed with code ${event.code}.`);
  if (shouldReconnect()) scheduleReconnect();
  renderConnectionStatus();
}

function handleSocketMessage(event) {
  if (event.target !== state.socket) return;
  state.lastFrameAt = Date.now();
  state.failedAttempts = 0;
  let frame;
  try {
    frame = JSON.parse(event.data);
  } catch (error) {
    console.error("The relay sent a frame that is not valid JSON:", error);
    return;
  }
  if (frame === null || typeof frame !== "object" || typeof frame.type !== "string") {
    console.error("The relay sent a frame without a string type:", frame);
    return;
  }
  handleFrame(frame);
}

// Runs every few seconds: sends the keep-alive ping and drops a socket that has gone
// silent. Timers in background tabs can fire late, so a silent socket counts as dead
// only when a ping sent at least PING_GRACE_MS ago is still unanswered.
function checkConnection() {
  const socket = state.socket;
  if (!socket) return;
  const now = Date.now();
  if (socket.readyState === WebSocket.CONNECTING) {
    if (now - state.connectStartedAt >= CONNECT_TIMEOUT_MS) {
      console.warn(`Connecting to the relay timed out after ${CONNECT_TIMEOUT_MS} ms. Retrying.`);
      dropSocket(true);
    }
    return;
  }
  if (socket.readyState !== WebSocket.OPEN) return;
  const pingUnanswered = state.lastPingAt > state.lastFrameAt && now - state.lastPingAt >= PING_GRACE_MS;
  if (now - state.lastFrameAt >= IDLE_TIMEOUT_MS && pingUnanswered) {
    console.warn(`No frame from the relay for ${IDLE_TIMEOUT_MS} ms. Reconnecting.`);
    dropSocket(true);
    return;
  }
  if (now - state.lastPingAt >= PING_INTERVAL_MS && sendFrame({ type: "ping" })) state.lastPingAt = now;
}

// ---- Frames from the relay ----

function handleFrame(frame) {
  switch (frame.type) {
    case "status":
      handleStatus(frame);
      break;
    case "started":
      handleStarted(frame);
      break;
    case "unavailable":
      handleUnavailable(frame);
      break;
    case "queued":
      handleQueued(frame, false);
      break;
    case "requeued":
      handleQueued(frame, true);
      break;
    case "assigned":
      handleAssigned(frame);
      break;
    case "message":
      handleMessageFrame(frame);
      break;
    case "ack":
      handleAck(frame);
      break;
    case "ended":
      handleEnded(frame);
      break;
    case "error":
      handleError(frame);
      break;
    case "deleted":
      handleDeleted();
      break;
    case "pong":
      break; // handleSocketMessage has already noted that a frame arrived
    default:
      console.error(`The relay sent a frame of unknown type ${JSON.stringify(frame.type)}.`);
  }
}

function reportInvalidFrame(frame) {
  console.error(`The relay sent an invalid ${JSON.stringify(frame.type)} frame:`, frame);
}

function isPositiveInteger(value) {
  return Number.isInteger(value) && value >= 1;
}

function handleStatus(frame) {
  if (typeof frame.volunteers_available !== "boolean") return reportInvalidFrame(frame);
  state.volunteersAvailable = frame.volunteers_available;
  render();
}

function handleStarted(frame) {
  if (typeof frame.token !== "string" || !frame.token) return reportInvalidFrame(frame);
  state.token = frame.token;
  storeToken(frame.token);
  rememberForNoScript(frame.token);
  state.startRequested = false;
  state.requeued = false;
  state.queuePosition = null;
  setPhase("waiting");
}

function handleUnavailable(frame) {
  state.startRequested = false;
  if (typeof frame.emergency === "string" && frame.emergency) {
    for (const element of document.querySelectorAll(".emergency-number")) element.textContent = frame.emergency;
  }
  setPhase("unavailable");
}

function handleQueued(frame, isRequeue) {
  if (!isPositiveInteger(frame.position)) return reportInvalidFrame(frame);
  if (state.ending || state.phase === "ended") return;
  // After a requeue, later `queued` frames only update the position.
  state.requeued = isRequeue || (state.requeued && state.phase === "waiting");
  state.queuePosition = frame.position;
  setPhase("waiting");
}

function handleAssigned(frame) {
  if (typeof frame.volunteer !== "string") return reportInvalidFrame(frame);
  if (state.ending || state.phase === "ended") return;
  // A second "assigned" while chatting means a supervisor handed the chat to
  // another volunteer.
  state.continued = state.phase === "chatting";
  state.volunteerName = frame.volunteer.trim();
  state.requeued = false;
  state.queuePosition = null;
  setPhase("chatting");
}

function handleMessageFrame(frame) {
  const { seq, sender, body } = frame;
  if (!isPositiveInteger(seq) || typeof body !== "string" || (sender !== "visitor" && sender !== "volunteer")) {
    return reportInvalidFrame(frame);
  }
  if (state.messages.has(seq)) return; // already rendered, from an ack or an earlier socket
  const sentAt = parseTime(frame.sent_at);
  const pending = sender === "visitor" ? takePendingMessage(frame.client_id) : null;
  let item;
  if (pending) {
    item = pending.item;
    markDelivered(item, sentAt);
  } else {
    const author = typeof frame.author === "string" ? frame.author : null;
    const card = isResourceCard(frame.resource) ? frame.resource : null;
    item = createMessageItem(sender, body, sentAt, author, card);
  }
  placeMessage(item, seq);
}

function handleAck(frame) {
  if (typeof frame.client_id !== "string" || !isPositiveInteger(frame.seq)) return reportInvalidFrame(frame);
  const pending = takePendingMessage(frame.client_id);
  if (!pending) return; // a repeated ack for a message sent again after a reconnect
  if (state.messages.has(frame.seq)) {
    pending.item.remove();
    return;
  }
  // An ack carries no sent_at, so the message shows the time its ack arrived.
  markDelivered(pending.item, new Date());
  placeMessage(pending.item, frame.seq);
}

function handleEnded(frame) {
  state.deleteToken = state.token ?? state.deleteToken;
  state.token = null;
  clearStoredToken();
  state.ending = false;
  state.startRequested = false;
  abandonPendingMessages();
  showEnded(frame.reason);
}

function handleError(frame) {
  const code = typeof frame.code === "string" ? frame.code : "";
  console.warn(`The relay rejected a frame with error ${JSON.stringify(code)}: ${frame.message}`);
  switch (code) {
    case "empty_message":
    case "message_too_long":
      rejectPendingMessage(frame.client_id, code === "empty_message" ? EMPTY_MESSAGE_TEXT : TOO_LONG_TEXT);
      break;
    case "storage_failed":
      if (typeof frame.client_id === "string") retryAfterStorageFailure(frame.client_id);
      else failStart();
      break;
    case "not_found":
      if (state.deleting) {
        handleDeleted(); // deleted already, from another tab or by the retention period
        break;
      }
      forgetConversation(false);
      break;
    case "conversation_ended":
      forgetConversation(true);
      break;
    case "already_started":
      break; // a second start or resume on a socket that already has the conversation
    case "rate_limited":
    case "blocked":
      if (typeof frame.client_id === "string") rejectPendingMessage(frame.client_id, frame.message);
      else failStart(frame.message);
      break;
    default:
      if (state.phase === "resuming") forgetConversation(false); // e.g. a malformed stored token
      else failStart();
  }
}

// Shows an error, and returns the start button to normal if a start was waiting.
function failStart(text = GENERIC_ERROR_TEXT) {
  showError(text);
  if (!state.startRequested) return;
  state.startRequested = false;
  render();
}

// Drops the conversation after the relay rejected its token. `ended` selects the
// ended state, otherwise the page returns to the start state.
function forgetConversation(ended) {
  state.token = null;
  clearStoredToken();
  state.ending = false;
  abandonPendingMessages();
  if (state.phase === "ended") return; // keeps the reason already shown
  if (ended) {
    showEnded(null);
    return;
  }
  resetConversation();
  showError(_("Your earlier chat is no longer available. You can start a new one."));
  setPhase("welcome");
}

// ---- Visitor actions ----

function startChat() {
  if (state.startRequested) return;
  clearError();
  resetConversation();
  state.startRequested = true;
  render();
  if (!sendFrame({ type: "start" })) connect(); // otherwise handleOpen sends it
}

// Starts over on a new socket, because the old one may still carry the ended chat.
function startNewChat() {
  dropSocket(false);
  state.failedAttempts = 0;
  state.everConnected = false; // shows "Connecting…", not "Reconnecting…", if the new socket fails
  setPhase("welcome");
  startChat();
}

function endChat() {
  if (!state.token) return;
  state.deleteToken = state.token;
  state.ending = true;
  clearStoredToken();
  sendFrame({ type: "end" }); // when offline, handleOpen sends it after the resume
  showEnded("visitor");
}

// White space, zero-width and other invisible characters only, as the relay's
// protocol.is_blank counts them; the relay checks again.
const BLANK_PATTERN = /^[\s\p{Z}\p{Cc}\p{Cf}\u115f\u1160\u3164\uffa0\u2800\ufe00-\ufe0f]*$/u;

function submitMessage() {
  const body = dom.input.value.trim();
  if (!body || BLANK_PATTERN.test(body)) {
    showError(EMPTY_MESSAGE_TEXT);
    return;
  }
  const length = countCharacters(body);
  if (length > MAX_MESSAGE_CHARS) {
    showError(
      _("Your message has %(count)s characters. Please shorten it to %(max)s or fewer.", {
        count: formatNumber(length),
        max: formatNumber(MAX_MESSAGE_CHARS),
      }),
    );
    return;
  }
  clearError();
  const clientId = createClientId();
  const item = createMessageItem("visitor", body, null);
  setMessageStatus(item, _("Sending…"));
  item.classList.add("message-pending");
  appendMessageItem(item);
  state.pending.set(clientId, { body, item, failures: 0, retryTimer: null });
  sendPendingMessage(clientId);
  dom.input.value = "";
  updateCounter();
}

function handleInputKeydown(event) {
  // keyCode 229 is a key press that an input method editor is still composing.
  if (event.key !== "Enter" || event.shiftKey || event.isComposing || event.keyCode === 229) return;
  event.preventDefault();
  submitMessage();
}

function handleInput() {
  clearError();
  updateCounter();
}

function askToDelete() {
  dom.deleteButton.hidden = true;
  dom.deleteConfirm.hidden = false;
  dom.deleteNo.focus();
}

function cancelDelete() {
  dom.deleteConfirm.hidden = true;
  dom.deleteButton.hidden = false;
  dom.deleteButton.focus();
}

function deleteConversation() {
  if (!state.deleteToken || state.deleting) return;
  clearError();
  state.deleting = true;
  dom.deleteYes.disabled = true;
  if (!sendFrame({ type: "delete", token: state.deleteToken })) connect(); // handleOpen sends it
}

// The relay deleted the conversation: the transcript goes from this page as well.
function handleDeleted() {
  resetConversation();
  render();
  dom.deletedText.hidden = false;
  dom.deletedText.focus();
}

// ---- Pending messages ----

function sendPendingMessage(clientId) {
  const pending = state.pending.get(clientId);
  if (pending) sendFrame({ type: "send", client_id: clientId, body: pending.body });
}

function takePendingMessage(clientId) {
  const pending = state.pending.get(clientId);
  if (!pending) return null;
  state.pending.delete(clientId);
  clearTimeout(pending.retryTimer);
  return pending;
}

// Removes a message the relay rejected and puts its text back into an empty field.
function rejectPendingMessage(clientId, text) {
  const pending = takePendingMessage(clientId);
  if (pending) {
    pending.item.remove();
    if (!dom.input.value.trim()) {
      dom.input.value = pending.body;
      updateCounter();
    }
  }
  showError(text);
}

function retryAfterStorageFailure(clientId) {
  const pending = state.pending.get(clientId);
  if (!pending) return;
  clearTimeout(pending.retryTimer);
  const delay = STORAGE_RETRY_DELAYS_MS[pending.failures];
  pending.failures += 1;
  if (delay === undefined) {
    markFailed(clientId, pending);
    return;
  }
  pending.retryTimer = setTimeout(() => sendPendingMessage(clientId), delay);
}

// Marks a message "Not sent" with a button to try again. It stays pending, so a
// reconnect sends it again as well.
function markFailed(clientId, pending) {
  setMessageStatus(pending.item, _("Not sent."));
  pending.item.classList.add("message-failed");
  const retry = document.createElement("button");
  retry.type = "button";
  retry.className = "link-button";
  retry.textContent = _("Try again");
  retry.addEventListener("click", () => {
    pending.failures = 0;
    retry.remove();
    pending.item.classList.remove("message-failed");
    setMessageStatus(pending.item, _("Sending…"));
    sendPendingMessage(clientId);
  });
  pending.item.querySelector(".message-meta").append(retry);
}

// Marks every unacknowledged message "Not sent" when the conversation is over.
function abandonPendingMessages() {
  for (const clientId of [...state.pending.keys()]) {
    const pending = takePendingMessage(clientId);
    setMessageStatus(pending.item, _("Not sent."));
    pending.item.classList.add("message-failed");
    pending.item.querySelector(".link-button")?.remove();
  }
}

function createClientId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (byte) => CLIENT_ID_ALPHABET[byte & 63]).join("");
}

function countCharacters(text) {
  let count = 0;
  for (const _ of text) count += 1; // iterates code points, as the relay counts them
  return count;
}

// ---- Transcript ----

// A message with a resource `card` shows the card; its body is the card as plain text.
function createMessageItem(sender, body, sentAt, volunteerName = null, card = null) {
  const item = document.createElement("div");
  item.className = `message message-${sender}`;
  const meta = document.createElement("p");
  meta.className = "message-meta";
  const author = document.createElement("span");
  author.className = "message-author";
  // The relay names the volunteer who wrote each reply, which matters after a hand-back.
  author.textContent = sender === "visitor" ? _("You") : volunteerName || state.volunteerName || _("Volunteer");
  const time = document.createElement("time");
  time.className = "message-time";
  const status = document.createElement("span");
  status.className = "message-status";
  meta.append(author, " ", time, " ", status);
  if (card) {
    item.append(meta, buildResourceCard(card, { site: dom.chat.dataset.site || "", labels: CARD_LABELS }));
  } else {
    const text = document.createElement("p");
    text.className = "message-body";
    text.dir = "auto";
    appendLinkedText(text, body);
    item.append(meta, text);
  }
  setMessageTime(item, sentAt);
  return item;
}

function setMessageTime(item, date) {
  const time = item.querySelector(".message-time");
  if (!date) {
    time.textContent = "";
    time.removeAttribute("datetime");
    return;
  }
  time.dateTime = date.toISOString();
  time.textContent = date.toLocaleTimeString(document.documentElement.lang || "en", { hour: "2-digit", minute: "2-digit" });
}

function setMessageStatus(item, text) {
  item.querySelector(".message-status").textContent = text;
}

function markDelivered(item, sentAt) {
  item.classList.remove("message-pending", "message-failed");
  item.querySelector(".link-button")?.remove();
  setMessageStatus(item, "");
  setMessageTime(item, sentAt ?? new Date());
}

function parseTime(text) {
  if (typeof text !== "string") return null;
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? null : date;
}

// Puts a stored message in seq order: after every lower seq, before higher seqs and
// before the pending messages, which have no seq yet. A message already in the right
// place is not moved, so the log does not announce it twice.
function placeMessage(item, seq) {
  const follow = isScrolledToEnd();
  item.dataset.seq = String(seq);
  state.messages.set(seq, item);
  let next = null;
  for (const child of dom.transcript.children) {
    if (child !== item && (!child.dataset.seq || Number(child.dataset.seq) > seq)) {
      next = child;
      break;
    }
  }
  if (item.parentNode !== dom.transcript || item.nextElementSibling !== next) {
    dom.transcript.insertBefore(item, next);
  }
  while (state.messages.has(state.lastSeq + 1)) state.lastSeq += 1;
  render();
  if (follow) scrollToEnd();
}

function appendMessageItem(item) {
  dom.transcript.append(item);
  render();
  scrollToEnd();
}

function isScrolledToEnd() {
  const { scrollHeight, scrollTop, clientHeight } = dom.transcript;
  return scrollHeight - scrollTop - clientHeight < 48;
}

function scrollToEnd() {
  dom.transcript.scrollTop = dom.transcript.scrollHeight;
}

function resetConversation() {
  for (const pending of state.pending.values()) clearTimeout(pending.retryTimer);
  state.pending.clear();
  state.messages.clear();
  state.lastSeq = 0;
  state.token = null;
  state.ending = false;
  state.requeued = false;
  state.continued = false;
  state.queuePosition = null;
  state.volunteerName = "";
  state.deleteToken = null;
  state.deleting = false;
  state.carriedOver = false;
  dom.deleteYes.disabled = false;
  dom.deletedText.hidden = true;
  dom.deleteConfirm.hidden = true;
  dom.deleteButton.hidden = false;
  dom.transcript.replaceChildren();
}

// ---- Page state ----

function setPhase(phase) {
  const changed = phase !== state.phase;
  state.phase = phase;
  render();
  if (changed) moveFocusIfLost();
}

function showEnded(reason) {
  const text = ENDED_REASON_TEXTS[reason] ?? "";
  dom.endedReason.textContent = text;
  dom.endedReason.hidden = !text;
  setPhase("ended");
}

function render() {
  const { phase } = state;
  const hasMessages = dom.transcript.childElementCount > 0;
  const noVolunteers = state.volunteersAvailable === false;
  dom.resumingState.hidden = phase !== "resuming";
  dom.welcomeState.hidden = phase !== "welcome";
  dom.welcomeUnavailable.hidden = !noVolunteers || !state.withinHours;
  renderOffline(phase, noVolunteers);
  setText(dom.startButton, state.startRequested ? _("Starting…") : _("Start chat"));
  dom.unavailableState.hidden = phase !== "unavailable";
  dom.availableAgain.hidden = state.volunteersAvailable !== true;
  setText(dom.retryButton, state.startRequested ? _("Trying…") : _("Try again"));
  dom.waitingState.hidden = phase !== "waiting";
  dom.waitingText.hidden = state.requeued;
  dom.requeuedText.hidden = !state.requeued;
  dom.waitingUnavailable.hidden = !noVolunteers;
  dom.queueLine.hidden = state.queuePosition === null;
  for (const element of document.querySelectorAll(".queue-position")) {
    setText(element, state.queuePosition === null ? "" : formatNumber(state.queuePosition));
  }
  dom.chattingState.hidden = phase !== "chatting";
  setText(
    dom.volunteerHeading,
    state.volunteerName
      ? _("You are chatting with %(name)s", { name: state.volunteerName })
      : _("You are chatting with a volunteer"),
  );
  dom.continuedText.hidden = !state.continued;
  dom.transcript.hidden = !(phase === "chatting" || (hasMessages && (phase === "waiting" || phase === "ended")));
  dom.endedState.hidden = phase !== "ended";
  dom.deleteControls.hidden = phase !== "ended" || !state.deleteToken;
  // feedback.js posts the form and stores in data-answered the token it answered for.
  const answered = Boolean(state.deleteToken) && dom.feedbackForm.dataset.answered === state.deleteToken;
  dom.feedbackToken.value = state.deleteToken ?? "";
  dom.feedbackForm.hidden = phase !== "ended" || !state.deleteToken || answered;
  dom.feedbackThanks.hidden = phase !== "ended" || !answered;
  dom.form.hidden = phase !== "chatting" && phase !== "waiting";
  dom.endButton.hidden = phase !== "waiting" && phase !== "chatting";
  // The unavailable notices carry their own emergency line.
  dom.footer.hidden = phase === "unavailable" || (phase === "welcome" && noVolunteers);
  renderConnectionStatus();
}

// Outside opening hours or with nobody available, the message form takes the
// place of the start button. A waiting visitor gets it, filled with what they
// wrote, once the last volunteer leaves. It stays shown while it has text.
function renderOffline(phase, noVolunteers) {
  const offline = !state.withinHours || noVolunteers;
  const starting = phase === "welcome" || phase === "unavailable";
  const carryOver = phase === "waiting" && noVolunteers;
  if (carryOver && !state.carriedOver) carryOverToMessage();
  const keepText = dom.leaveBody.value.trim() !== "" && (starting || phase === "waiting");
  dom.startForm.hidden = offline;
  dom.offlineState.hidden = !((starting && offline) || carryOver || keepText);
}

function carryOverToMessage() {
  state.carriedOver = true;
  const written = [];
  for (const body of dom.transcript.querySelectorAll(".message-visitor .message-body")) {
    written.push(body.textContent);
  }
  const draft = dom.input.value.trim();
  if (draft) written.push(draft);
  if (!dom.leaveBody.value.trim()) dom.leaveBody.value = written.join("\n\n");
  dom.leaveChatToken.value = state.token || "";
}

function renderConnectionStatus() {
  const open = state.socket !== null && state.socket.readyState === WebSocket.OPEN;
  const visible = !open && shouldReconnect() && state.phase !== "ended" && (state.everConnected || state.failedAttempts > 0);
  dom.connectionStatus.hidden = !visible;
  if (!visible) return;
  let text = state.everConnected ? _("Reconnecting…") : _("Connecting…");
  if (state.failedAttempts >= SLOW_RECONNECT_ATTEMPTS) text = _("Still trying to connect. Please check your internet connection.");
  setText(dom.connectionStatus, text);
}

// Moves focus to the new state's main text when the focused element was hidden, so
// keyboard and screen reader users are not left on the page body.
function moveFocusIfLost() {
  const active = document.activeElement;
  if (active && active !== document.body && !active.closest("[hidden]")) return;
  const section = {
    welcome: dom.welcomeState,
    unavailable: dom.unavailableState,
    waiting: dom.waitingState,
    chatting: dom.chattingState,
    ended: dom.endedState,
  }[state.phase];
  section?.querySelector('[tabindex="-1"]:not([hidden])')?.focus();
}

// Changes text only when it differs, because rewriting the text inside a live region
// makes screen readers announce it again.
function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

function showError(text) {
  // Clearing first makes screen readers announce a repeated message again.
  dom.errorText.textContent = "";
  dom.errorText.textContent = text;
}

function clearError() {
  dom.errorText.textContent = "";
}

function updateCounter() {
  const length = countCharacters(dom.input.value.trim());
  const tooLong = length > MAX_MESSAGE_CHARS;
  dom.counter.hidden = length < COUNTER_FROM_CHARS;
  dom.counter.classList.toggle("counter-over", tooLong);
  const values = { count: formatNumber(length), max: formatNumber(MAX_MESSAGE_CHARS) };
  dom.counter.textContent = tooLong
    ? _("%(count)s of %(max)s characters, too long to send", values)
    : _("%(count)s of %(max)s characters", values);
}

// ---- Session storage ----
// The token is the only thing this page stores, and only for the running chat.

function readStoredToken() {
  try {
    return sessionStorage.getItem(STORAGE_KEY) || null;
  } catch (error) {
    console.warn("sessionStorage is not available, so a reload cannot resume the chat:", error);
    return null;
  }
}

function storeToken(token) {
  try {
    sessionStorage.setItem(STORAGE_KEY, token);
  } catch (error) {
    console.warn("Storing the chat token in sessionStorage failed:", error);
  }
}

function clearStoredToken() {
  try {
    sessionStorage.removeItem(STORAGE_KEY);
  } catch (error) {
    console.warn("Removing the chat token from sessionStorage failed:", error);
  }
}

// ---- Start ----

// Hands the token to the relay for its HttpOnly cookie, so that a reload with
// scripts switched off finds this conversation. Where cookies do not work (a
// cross-site iframe) this changes nothing, and the chat goes on as before.
function rememberForNoScript(token) {
  const body = new URLSearchParams({ site: dom.chat.dataset.site || "", token, csrf_token: dom.chat.dataset.sessionCsrf || "" });
  fetch("/chat/session", { method: "POST", body, credentials: "same-origin" }).catch((error) => {
    console.info("The relay could not remember the chat for a reload without scripts:", error);
  });
}

// The start forms work without this script too; with it, they start over the socket.
function onSubmit(form, action) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    action();
  });
}

function init() {
  // The page's conversation block for browsers without scripts: this script
  // carries the conversation over its socket instead.
  document.getElementById("nojs-conversation")?.remove();
  document.getElementById("nojs-delete-form")?.remove();
  onSubmit(dom.startForm, startChat);
  onSubmit(dom.retryForm, startChat);
  onSubmit(dom.newChatForm, startNewChat);
  // The message form posts as a plain form; a chat it replaces ends with it.
  dom.leaveForm.addEventListener("submit", () => {
    if (dom.leaveChatToken.value) clearStoredToken();
  });
  dom.endButton.addEventListener("click", endChat);
  dom.deleteButton.addEventListener("click", askToDelete);
  dom.deleteYes.addEventListener("click", deleteConversation);
  dom.deleteNo.addEventListener("click", cancelDelete);
  dom.form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitMessage();
  });
  dom.input.addEventListener("keydown", handleInputKeydown);
  dom.input.addEventListener("input", handleInput);
  window.addEventListener("online", reconnectNow);
  document.addEventListener("visibilitychange", checkConnection);

  if (!state.wsUrl) {
    console.error("The chat page has no data-ws-url attribute, so it cannot connect.");
    showError(GENERIC_ERROR_TEXT);
    render();
    return;
  }
  // A conversation the page was rendered with (the relay's cookie, set by the page
  // without scripts) comes first; otherwise the one this tab started.
  const pageToken = dom.chat.dataset.resumeToken || null;
  const storedToken = readStoredToken();
  state.token = pageToken || storedToken;
  if (pageToken) storeToken(pageToken);
  else if (storedToken) rememberForNoScript(storedToken);
  if (state.token) {
    state.phase = "resuming";
    render();
  } else if (dom.chat.dataset.phase === "ended") {
    showEnded(dom.chat.dataset.endedReason || null);
  } else {
    state.phase = "welcome";
    render();
  }
  connect();
  setInterval(checkConnection, CHECK_INTERVAL_MS);
}

init();
