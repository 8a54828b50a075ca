// Volunteer dashboard: one WebSocket to the relay (the URL in data-ws-url), speaking the
// volunteer frames of docs/protocol.md.
//
// Two rules keep it safe for the volunteers and the visitors:
// - Each chat panel captures its conversation id in closures when the panel is built.
//   No handler reads a shared "current chat" variable, so a reply goes to the chat whose
//   form it was typed into.
// - Text from the relay reaches the DOM only through textContent, so visitor text shows as
//   text and is never parsed as HTML.

import { buildResourceCard, isResourceCard } from '/static/card.js';
import { appendLinkedText, readJsonBlock, translator } from '/static/text.js';
import {
  SUPPORT_TEXT,
  buildHardChatControl,
  buildSupportControls,
  buildWhisperElement,
  placeWhisper,
} from '/dashboard/static/support.js';
import { buildResourceSearch } from './resources.js';
// Texts in the dashboard's language, keyed by the English text that _() receives; the
// relay fills #dashboard-text from this file's _() calls, so each text is a literal.
const _ = translator(readJsonBlock('dashboard-text'));
// The names of the visitors' languages in the dashboard's language, by code.
const LANGUAGE_NAMES = readJsonBlock('language-names');

// NOTE: the relay's limit can be set lower with VSO_MAX_MESSAGE_CHARS. A reply over that
// lower limit passes this check, and the relay's message_too_long error states its limit.
const MAX_BODY_CHARS = 4000;
const PING_INTERVAL_MS = 25_000;
const SILENCE_TIMEOUT_MS = 60_000;
const RECONNECT_INITIAL_MS = 500;
const RECONNECT_MAX_MS = 15_000;
const RECONNECT_ATTEMPTS_BEFORE_HINT = 6;
const WAITING_REFRESH_MS = 15_000;
const QUEUE_NOTICE_MS = 12_000;
const CLOSE_CODE_SIGNED_OUT = 4001;
const BASE_TITLE = _('Dashboard');
// The labels of a resource card's details; card.js shows them as given.
const CARD_LABELS = {
  phone: _('Phone'),
  email: _('E-mail'),
  hours: _('Hours'),
  website: _('Website'),
  link: _('Read more'),
};
const SIGN_IN_PATH = '/dashboard';
const SESSION_PATH = '/dashboard/session';

// 64 characters, so a random byte masked with 63 picks each one with equal chance.
const CLIENT_ID_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-';
const CLIENT_ID_LENGTH = 22;

const ACCEPT_ERROR_TEXT = {
  already_taken: _('Another volunteer took that chat, or the visitor left.'),
  at_capacity: _('You have as many chats as you can take. End one before accepting another.'),
  not_available: _('Switch on “Available” to accept a visitor.'),
  not_found: _('That visitor is no longer waiting.'),
};

const CHAT_ERROR_TEXT = {
  empty_message: _('The reply was empty, so it was not sent.'),
  conversation_ended: _('This chat has ended, so the reply was not sent.'),
  forbidden: _('This chat is no longer assigned to you.'),
  not_found: _('The relay has no record of this chat.'),
  storage_failed: _('The relay could not save the reply. Select “Retry” to send it again.'),
};

const ENDED_REASON_TEXT = {
  visitor: _('The visitor ended the chat.'),
  abandoned: _('The visitor left and did not come back.'),
  volunteer: _('You ended the chat.'),
  handed_back: _('The chat was handed back to the queue.'),
  blocked: _('You blocked the visitor. No new chat can start from their connection for a while.'),
  deleted: _('The visitor deleted this conversation. Its messages are gone from the relay.'),
  transferred: _('A supervisor transferred this chat to another volunteer.'),
};

// Reasons after which the chat was not this volunteer's to finish, so it cannot be
// marked as hard from here.
const NOT_MARKABLE_REASONS = new Set(['handed_back', 'transferred', 'deleted']);

// The two actions of the confirm group under each chat: its question and its "yes".
const CONFIRM_TEXT = {
  end: { question: _('End this chat?'), yes: _('Yes, end chat'), busy: _('Ending the chat…') },
  block: {
    question: _('Block this visitor? The chat ends and they cannot start a new one for a while.'),
    yes: _('Yes, block'),
    busy: _('Blocking the visitor…'),
  },
};
const ENDED_WHILE_DISCONNECTED_TEXT =
  _('The chat ended or was handed back while the dashboard was disconnected.');

// Elements of dashboard.html, looked up once by findElements().
const ui = {};

const connection = {
  socket: null,
  open: false,
  signedOut: false,
  hasConnectedBefore: false,
  reconnectAttempt: 0,
  reconnectTimer: null,
  pingTimer: null,
  silenceTimer: null,
  // Conversations whose history is being replayed after a page load. Their visitor
  // messages are not counted as unread. See handlePong().
  replaying: new Set(),
  replayPingSent: false,
};

const dashboard = {
  available: false,
  capacity: null,
  chats: new Map(), // conversation → chat, in the order the chats were accepted
  closedConversations: new Set(),
  nextLabelIndex: 0,
  queueEntries: [],
  queueItems: new Map(), // conversation → the list item that shows it
  pendingAccepts: new Set(),
  queueNoticeTimer: null,
  audioContext: null,
  soundOn: false,
  elementCount: 0, // for unique element ids
  supportAlerts: new Map(), // alert id → alert, for supervisors
};

// ---------------------------------------------------------------------------
// Start-up

function main() {
  findElements();
  wireControls();
  renderQueue();
  updateChatsSummary();
  updateTitle();
  setInterval(refreshWaitingTimes, WAITING_REFRESH_MS);
  connect();
}

function findElements() {
  const ids = {
    root: 'dashboard',
    displayName: 'display-name',
    available: 'available',
    soundToggle: 'sound-toggle',
    connectionStatus: 'connection-status',
    notice: 'notice',
    noticeDismiss: 'notice-dismiss',
    queueHeading: 'queue-heading',
    queueBadge: 'queue-badge',
    queueNotice: 'queue-notice',
    queueHint: 'queue-hint',
    queueEmpty: 'queue-empty',
    queueList: 'queue-list',
    chatsHeading: 'chats-heading',
    chatCount: 'chat-count',
    chatsEmpty: 'chats-empty',
    chatPanels: 'chat-panels',
    announcer: 'announcer',
    breakBanner: 'break-banner',
    breakText: 'break-text',
    breakEnd: 'break-end',
    supervisorAlerts: 'supervisor-alerts',
    supervisorAlertsText: 'supervisor-alerts-text',
  };
  for (const [key, id] of Object.entries(ids)) {
    const element = document.getElementById(id);
    if (!element) {
      throw new Error(`dashboard.html has no element with id "${id}"`);
    }
    ui[key] = element;
  }
}

function wireControls() {
  ui.available.addEventListener('change', handleAvailabilityChange);
  ui.soundToggle.addEventListener('click', toggleSound);
  ui.noticeDismiss.addEventListener('click', clearNotice);
  ui.breakEnd.addEventListener('click', () => sendFrame({ type: 'end_break' }));
  document.addEventListener('visibilitychange', handleVisibilityChange);
  window.addEventListener('online', reconnectNow);
  window.addEventListener('beforeunload', warnAboutUnsentReplies);
}

// Asks the browser to confirm leaving the page while replies wait for their ack, because
// those replies live only in this page.
function warnAboutUnsentReplies(event) {
  for (const chat of dashboard.chats.values()) {
    if (chat.pending.size > 0) {
      event.preventDefault();
      return;
    }
  }
}

// ---------------------------------------------------------------------------
// Connection

function connect() {
  clearTimeout(connection.reconnectTimer);
  connection.reconnectTimer = null;
  if (connection.signedOut) {
    return;
  }
  showConnectionStatus(connection.hasConnectedBefore ? _('Reconnecting…') : _('Connecting…'), 'connecting');

  const url = ui.root.dataset.wsUrl;
  let socket;
  try {
    socket = new WebSocket(url);
  } catch (error) {
    console.error('Failed to open the dashboard WebSocket: invalid URL', url, error);
    showConnectionStatus(_('The dashboard cannot connect because its WebSocket address is invalid.'), 'failed');
    return;
  }
  connection.socket = socket;
  socket.addEventListener('open', () => handleOpen(socket));
  socket.addEventListener('message', (event) => handleSocketMessage(socket, event));
  socket.addEventListener('close', (event) => handleClose(socket, event));
}

function handleOpen(socket) {
  if (socket !== connection.socket) {
    return;
  }
  connection.open = true;
  restartSilenceTimer();
  connection.pingTimer = setInterval(() => sendFrame({ type: 'ping' }), PING_INTERVAL_MS);
  sendHello();
  updateControlsForConnection();
}

function handleSocketMessage(socket, event) {
  if (socket !== connection.socket) {
    return;
  }
  restartSilenceTimer();
  let frame;
  try {
    frame = JSON.parse(event.data);
  } catch (error) {
    console.error('Ignored a frame from the relay that is not JSON', event.data, error);
    return;
  }
  if (frame === null || typeof frame !== 'object' || typeof frame.type !== 'string') {
    console.error('Ignored a frame from the relay without a string "type"', frame);
    return;
  }
  dispatchFrame(frame);
}

function handleClose(socket, event) {
  if (socket !== connection.socket) {
    return;
  }
  const wasOpen = connection.open;
  dropSocket();
  if (event.code === CLOSE_CODE_SIGNED_OUT) {
    showSignedOut();
    return;
  }
  console.info(`Dashboard WebSocket closed with code ${event.code}; reconnecting`);
  scheduleReconnect();
  if (!wasOpen) {
    // A refused handshake looks like a network failure to scripts; the relay
    // refuses it when the session has expired, so ask whether it still exists.
    checkSession();
  }
}

async function checkSession() {
  try {
    const response = await fetch(SESSION_PATH, { cache: 'no-store', credentials: 'same-origin' });
    const body = await response.json();
    if (body.signed_in === false) {
      showSignedOut();
    }
  } catch (error) {
    console.info('Could not check the session; the relay may be down', error);
  }
}

// Forgets the current socket and everything that only made sense while it was open.
function dropSocket() {
  connection.socket = null;
  connection.open = false;
  connection.replayPingSent = false;
  clearInterval(connection.pingTimer);
  clearTimeout(connection.silenceTimer);
  connection.pingTimer = null;
  connection.silenceTimer = null;
  // The assigned or error frame for an accept sent on the lost socket never arrives.
  // The next state frame shows whether the accept went through.
  dashboard.pendingAccepts.clear();
  updateControlsForConnection();
}

function restartSilenceTimer() {
  clearTimeout(connection.silenceTimer);
  connection.silenceTimer = setTimeout(handleSilence, SILENCE_TIMEOUT_MS);
}

// The relay replies to each 25 s ping with a pong, so 60 s without any frame means the
// connection is dead even if the browser has not noticed.
function handleSilence() {
  const socket = connection.socket;
  console.warn(`No frame from the relay for ${SILENCE_TIMEOUT_MS / 1000} s; reconnecting`);
  dropSocket();
  if (socket) {
    socket.close();
  }
  scheduleReconnect();
}

function scheduleReconnect() {
  if (connection.signedOut || connection.reconnectTimer !== null) {
    return;
  }
  const ceiling = Math.min(RECONNECT_MAX_MS, RECONNECT_INITIAL_MS * 2 ** connection.reconnectAttempt);
  // Jitter between half and all of the ceiling spreads out the dashboards that lost the
  // relay at the same moment.
  const delay = ceiling / 2 + Math.random() * (ceiling / 2);
  connection.reconnectAttempt += 1;
  connection.reconnectTimer = setTimeout(connect, delay);

  if (connection.reconnectAttempt >= RECONNECT_ATTEMPTS_BEFORE_HINT) {
    showConnectionStatus(_('Reconnecting… If this goes on, reload the page.'), 'connecting', {
      text: _('Reload'),
      href: SIGN_IN_PATH,
    });
  } else {
    showConnectionStatus(_('Reconnecting…'), 'connecting');
  }
}

function reconnectNow() {
  if (connection.reconnectTimer !== null) {
    connect();
  }
}

function showSignedOut() {
  connection.signedOut = true;
  clearTimeout(connection.reconnectTimer);
  connection.reconnectTimer = null;
  showConnectionStatus(_('You have been signed out.'), 'signed-out', {
    text: _('Sign in again'),
    href: SIGN_IN_PATH,
  });
  for (const chat of dashboard.chats.values()) {
    setReplyFormEnabled(chat, false);
    chat.elements.endControls.hidden = true;
  }
  updateControlsForConnection();
}

function sendFrame(frame) {
  const socket = connection.socket;
  if (!socket || !connection.open || socket.readyState !== WebSocket.OPEN) {
    return false;
  }
  socket.send(JSON.stringify(frame));
  return true;
}

function sendHello() {
  const lastSeq = {};
  for (const chat of dashboard.chats.values()) {
    if (!chat.ended) {
      lastSeq[chat.conversation] = chat.lastSeq;
    }
  }
  sendFrame({ type: 'hello', last_seq: lastSeq });
  // The relay handles a socket's frames one at a time, so the pong to this ping arrives
  // after the messages it replays for the hello.
  connection.replayPingSent = sendFrame({ type: 'ping' });
}

// ---------------------------------------------------------------------------
// Frames from the relay

function dispatchFrame(frame) {
  switch (frame.type) {
    case 'state':
      handleState(frame);
      break;
    case 'queue':
      handleQueue(frame);
      break;
    case 'availability':
      handleAvailability(frame);
      break;
    case 'assigned':
      handleAssigned(frame);
      break;
    case 'message':
      handleMessage(frame);
      break;
    case 'ack':
      handleAck(frame);
      break;
    case 'visitor_status':
      handleVisitorStatus(frame);
      break;
    case 'ended':
      handleEnded(frame);
      break;
    case 'deleted':
      handleDeleted(frame);
      break;
    case 'error':
      handleError(frame);
      break;
    case 'pong':
      handlePong();
      break;
    case 'whisper':
      handleWhisper(frame);
      break;
    case 'supervisor_joined':
    case 'supervisor_left':
      handleSupervisorPresence(frame);
      break;
    case 'support_requested':
      handleSupportRequested(frame);
      break;
    case 'support_acknowledged':
      handleSupportAcknowledged(frame);
      break;
    case 'support_alert':
      handleSupportAlert(frame);
      break;
    case 'hard_chat':
      announce(`${frame.volunteer} marked a chat as hard and is taking a break.`);
      break;
    case 'break':
      showBreak(frame.until);
      break;
    case 'break_ended':
      hideBreak();
      break;
    case 'joined':
    case 'left':
      break; // answers to the supervision page, which shares this socket's account
    default:
      console.error(`Unknown frame type "${frame.type}" from the relay`, frame);
  }
}

function handleState(frame) {
  connection.reconnectAttempt = 0;
  connection.hasConnectedBefore = true;
  showConnectionStatus(_('Connected'), 'connected');

  if (typeof frame.display_name === 'string' && frame.display_name !== '') {
    ui.displayName.textContent = frame.display_name;
  }
  dashboard.capacity = Number.isInteger(frame.capacity) ? frame.capacity : null;
  setAvailability(frame.available === true);

  const listed = new Set();
  const chats = Array.isArray(frame.chats) ? [...frame.chats] : [];
  chats.sort((a, b) => String(a.started_at).localeCompare(String(b.started_at)));
  for (const entry of chats) {
    listed.add(entry.conversation);
    let chat = dashboard.chats.get(entry.conversation);
    if (!chat) {
      chat = createChat(entry.conversation, entry.started_at);
      if (connection.replayPingSent) {
        connection.replaying.add(chat.conversation);
      }
    } else if (chat.ended) {
      reopenChat(chat);
    }
    if (chat.ending) {
      resetEndControls(chat);
    }
    setVisitorConnected(chat, entry.visitor_connected !== false);
    setTransport(chat, entry.transport);
    setLanguage(chat, entry.language);
  }

  for (const chat of dashboard.chats.values()) {
    if (!chat.ended && !listed.has(chat.conversation)) {
      markChatEnded(chat, null);
    }
  }
  resendPendingReplies();
  updateChatsSummary();
  updateControlsForConnection();
  updateTitle();
}

function handleQueue(frame) {
  const entries = Array.isArray(frame.entries) ? frame.entries : [];
  const previous = new Set(dashboard.queueEntries.map((entry) => entry.conversation));
  const newcomers = entries.filter((entry) => !previous.has(entry.conversation));
  dashboard.queueEntries = entries;
  renderQueue();
  if (newcomers.length > 0) {
    announceNewVisitors(newcomers.length);
  }
  updateTitle();
}

function handleAvailability(frame) {
  setAvailability(frame.available === true);
}

function handleAssigned(frame) {
  const conversation = frame.conversation;
  const acceptedHere = dashboard.pendingAccepts.delete(conversation);
  let chat = dashboard.chats.get(conversation);
  if (!chat) {
    chat = createChat(conversation, frame.started_at);
  } else if (chat.ended) {
    reopenChat(chat);
  }
  if (typeof frame.visitor_connected === 'boolean') {
    setVisitorConnected(chat, frame.visitor_connected);
  }
  setTransport(chat, frame.transport);
  setLanguage(chat, frame.language);
  renderQueue();
  updateChatsSummary();
  announce(_('You are now chatting with %(label)s.', { label: chat.label }));
  if (acceptedHere) {
    chat.elements.textarea.focus();
  }
}

function handleMessage(frame) {
  if (!Number.isInteger(frame.seq) || frame.seq < 1) {
    console.error('Ignored a message frame without a valid seq', frame);
    return;
  }
  let chat = dashboard.chats.get(frame.conversation);
  if (!chat) {
    if (dashboard.closedConversations.has(frame.conversation)) {
      console.warn('Ignored a message for a chat whose panel was closed', frame.conversation, frame.seq);
      return;
    }
    // The relay sends messages only for this volunteer's chats, so show it rather than
    // lose what a visitor wrote.
    console.warn('Message for a chat that has no panel yet; opening one', frame.conversation);
    chat = createChat(frame.conversation, null);
    updateChatsSummary();
  }
  renderMessage(chat, frame);
}

function handleAck(frame) {
  const chat = dashboard.chats.get(frame.conversation);
  if (!chat) {
    return;
  }
  const pending = chat.pending.get(frame.client_id);
  if (!pending) {
    // The message frame for this reply arrived first, or another tab sent the reply.
    return;
  }
  chat.pending.delete(frame.client_id);
  if (!Number.isInteger(frame.seq)) {
    console.error('Ack without a valid seq; showing the reply as sent', frame);
    markReplySent(pending);
    return;
  }
  if (chat.renderedSeqs.has(frame.seq)) {
    pending.element.remove();
    return;
  }
  markReplySent(pending);
  pending.element.remove();
  placeMessage(chat, pending.element, frame.seq);
}

function handleVisitorStatus(frame) {
  const chat = dashboard.chats.get(frame.conversation);
  if (chat && !chat.ended) {
    setVisitorConnected(chat, frame.connected === true);
    setTransport(chat, frame.transport);
  }
}

function handleEnded(frame) {
  const chat = dashboard.chats.get(frame.conversation);
  if (!chat) {
    return;
  }
  const hadPendingReplies = chat.pending.size > 0;
  markChatEnded(chat, frame.reason);
  chat.elements.hardChat.hidden = NOT_MARKABLE_REASONS.has(frame.reason);
  if (frame.reason === 'transferred') {
    showNotice(`A supervisor transferred the chat with ${chat.label} to another volunteer.`);
    // The chat goes on with the new volunteer, so its panel closes here, unless it
    // shows replies that were not sent and whose text would be lost.
    if (!hadPendingReplies) {
      closeChat(chat);
    }
  }
}

// The visitor deleted the conversation: its messages leave the dashboard as well.
function handleDeleted(frame) {
  const chat = dashboard.chats.get(frame.conversation);
  if (!chat) {
    return;
  }
  markChatEnded(chat, 'deleted');
  chat.elements.notesLink.hidden = true;
  chat.elements.log.replaceChildren();
  chat.elements.endedReason.textContent = ENDED_REASON_TEXT.deleted;
}

function handleError(frame) {
  const { code, conversation } = frame;
  console.warn(`Error frame from the relay: ${code}`, frame);

  const chat = conversation === undefined ? undefined : dashboard.chats.get(conversation);
  const acceptError =
    dashboard.pendingAccepts.has(conversation) ||
    (conversation === undefined && dashboard.pendingAccepts.size > 0 && code in ACCEPT_ERROR_TEXT);
  if (acceptError && !(chat && !chat.ended)) {
    handleAcceptError(frame);
    return;
  }
  if (chat) {
    handleChatError(chat, frame);
    return;
  }
  showNotice(frame.message || _('The relay rejected a request (%(code)s).', { code }));
}

function handleAcceptError(frame) {
  if (frame.conversation === undefined) {
    dashboard.pendingAccepts.clear();
  } else {
    dashboard.pendingAccepts.delete(frame.conversation);
  }
  renderQueue();
  showQueueNotice(ACCEPT_ERROR_TEXT[frame.code] || frame.message || _('The visitor could not be accepted.'));
}

function handleChatError(chat, frame) {
  chat.elements.supportButton.disabled = false;
  const pending = frame.client_id === undefined ? undefined : chat.pending.get(frame.client_id);
  if (pending) {
    if (frame.code === 'storage_failed') {
      markReplyRetryable(chat, pending);
    } else {
      markReplyFailed(chat, pending, _('Not sent'));
      restoreDraft(chat, pending.body);
    }
  } else if (chat.ending) {
    resetEndControls(chat);
  }
  showChatAlert(chat, CHAT_ERROR_TEXT[frame.code] || frame.message || _('The relay rejected a request (%(code)s).', { code: frame.code }));
}

function handlePong() {
  if (connection.replayPingSent) {
    connection.replayPingSent = false;
    connection.replaying.clear();
  }
}

// ---------------------------------------------------------------------------
// Availability and sound

function setAvailability(available) {
  dashboard.available = available;
  ui.available.checked = available;
  renderQueue();
}

function handleAvailabilityChange() {
  const requested = ui.available.checked;
  if (!sendFrame({ type: 'availability', available: requested })) {
    ui.available.checked = dashboard.available;
    showNotice(_('Not connected, so “Available” was not changed. Try again when the connection is back.'));
    return;
  }
  // The relay confirms with an availability frame, which setAvailability() applies.
  dashboard.available = requested;
  renderQueue();
}

function toggleSound() {
  if (!dashboard.soundOn) {
    if (!dashboard.audioContext) {
      const AudioContextClass = window.AudioContext || window.webkitAudioContext;
      if (!AudioContextClass) {
        showNotice(_('This browser cannot play sounds.'));
        return;
      }
      // Browsers allow audio only from a context created or resumed during a user gesture.
      dashboard.audioContext = new AudioContextClass();
    }
    dashboard.soundOn = true;
    playChime();
  } else {
    dashboard.soundOn = false;
  }
  ui.soundToggle.textContent = dashboard.soundOn ? _('Sound on') : _('Enable sound');
  ui.soundToggle.setAttribute('aria-pressed', String(dashboard.soundOn));
}

// Plays a soft rising two-tone chime of about 0.33 s.
function playChime() {
  const context = dashboard.audioContext;
  if (!dashboard.soundOn || !context) {
    return;
  }
  if (context.state === 'suspended') {
    context.resume().catch((error) => console.warn('Failed to resume the AudioContext', error));
  }
  const start = context.currentTime + 0.02;
  playTone(context, 660, start, 0.15);
  playTone(context, 880, start + 0.15, 0.18);
}

function playTone(context, frequency, start, duration) {
  const oscillator = context.createOscillator();
  oscillator.type = 'sine';
  oscillator.frequency.value = frequency;
  const gain = context.createGain();
  gain.gain.setValueAtTime(0.0001, start);
  gain.gain.exponentialRampToValueAtTime(0.12, start + 0.02);
  gain.gain.exponentialRampToValueAtTime(0.0001, start + duration);
  oscillator.connect(gain).connect(context.destination);
  oscillator.start(start);
  oscillator.stop(start + duration + 0.02);
}

// ---------------------------------------------------------------------------
// Queue

function renderQueue() {
  const entries = dashboard.queueEntries;
  const focusedConversation = queueConversationWithFocus();
  const current = new Set(entries.map((entry) => entry.conversation));

  for (const [conversation, item] of dashboard.queueItems) {
    if (!current.has(conversation)) {
      item.element.remove();
      dashboard.queueItems.delete(conversation);
    }
  }
  entries.forEach((entry, index) => {
    let item = dashboard.queueItems.get(entry.conversation);
    if (!item) {
      item = buildQueueItem(entry.conversation);
      dashboard.queueItems.set(entry.conversation, item);
    }
    item.queuedAt = parseTime(entry.queued_at);
    item.label.textContent = _('Visitor %(number)s', { number: index + 1 });
    setLanguageText(item.language, entry.language);
    const child = ui.queueList.children[index];
    if (child !== item.element) {
      ui.queueList.insertBefore(item.element, child || null);
    }
  });

  refreshWaitingTimes();
  updateAcceptButtons();
  restoreQueueFocus(focusedConversation);

  const waiting = entries.length;
  ui.queueEmpty.hidden = waiting > 0;
  ui.queueBadge.hidden = waiting === 0;
  ui.queueBadge.textContent = String(waiting);
  updateQueueHint();
}

function updateQueueHint() {
  const waiting = dashboard.queueEntries.length;
  ui.queueHint.hidden = dashboard.available || waiting === 0 || connection.signedOut;
}

function buildQueueItem(conversation) {
  const element = document.createElement('li');
  element.className = 'queue-item';

  const label = document.createElement('span');
  label.className = 'queue-label';
  label.id = `queue-label-${nextElementId()}`;

  const language = document.createElement('span');
  language.className = 'queue-language';

  const waiting = document.createElement('span');
  waiting.className = 'queue-waiting';
  waiting.id = `queue-waiting-${nextElementId()}`;

  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'button-primary';
  button.textContent = _('Accept');
  button.setAttribute('aria-describedby', `${label.id} ${waiting.id}`);
  button.addEventListener('click', () => acceptVisitor(conversation));

  element.append(label, language, waiting, button);
  return { element, label, language, waiting, button, queuedAt: null };
}

function acceptVisitor(conversation) {
  if (dashboard.pendingAccepts.has(conversation)) {
    return;
  }
  if (!sendFrame({ type: 'accept', conversation })) {
    showQueueNotice(_('Not connected. Try again when the connection is back.'));
    return;
  }
  dashboard.pendingAccepts.add(conversation);
  updateAcceptButtons();
}

function updateAcceptButtons() {
  const usable = connection.open && dashboard.available && !connection.signedOut;
  for (const [conversation, item] of dashboard.queueItems) {
    item.button.disabled = !usable || dashboard.pendingAccepts.has(conversation);
  }
}

function refreshWaitingTimes() {
  const now = Date.now();
  for (const item of dashboard.queueItems.values()) {
    const text = formatWaiting(item.queuedAt === null ? null : now - item.queuedAt.getTime());
    item.waiting.textContent = text;
    item.element.setAttribute('aria-label', `${item.label.textContent}, ${item.language.textContent}, ${text}`);
  }
}

// NOTE: queued_at comes from the relay's clock, so a skewed local clock makes the time off
// by the skew. Negative durations show as "less than 1 min".
function formatWaiting(milliseconds) {
  if (milliseconds === null) {
    return _('waiting');
  }
  const minutes = Math.floor(Math.max(0, milliseconds) / 60_000);
  if (minutes < 1) {
    return _('waiting less than 1 min');
  }
  if (minutes < 60) {
    return _('waiting %(minutes)s min', { minutes });
  }
  const hours = Math.floor(minutes / 60);
  const rest = minutes % 60;
  return rest === 0 ? _('waiting %(hours)s h', { hours }) : _('waiting %(hours)s h %(minutes)s min', { hours, minutes: rest });
}

function queueConversationWithFocus() {
  for (const [conversation, item] of dashboard.queueItems) {
    if (item.element.contains(document.activeElement)) {
      return conversation;
    }
  }
  return null;
}

// Moving or removing a list item drops its focus to <body>. This puts focus back on the
// same visitor, or on the heading if that visitor left the queue. Focus never jumps to
// another visitor's Accept button, where a repeated key press would accept them.
function restoreQueueFocus(conversation) {
  if (conversation === null || ui.queueList.contains(document.activeElement)) {
    return;
  }
  const item = dashboard.queueItems.get(conversation);
  if (item && !item.button.disabled) {
    item.button.focus();
  } else {
    ui.queueHeading.focus();
  }
}

function announceNewVisitors(count) {
  const waiting = dashboard.queueEntries.length;
  const arrived = count === 1 ? _('A new visitor is waiting.') : _('%(count)s new visitors are waiting.', { count });
  const total = _('%(count)s waiting in total.', { count: waiting });
  announce(`${arrived} ${total}`);
  playChime();
}

function showQueueNotice(text) {
  clearTimeout(dashboard.queueNoticeTimer);
  ui.queueNotice.textContent = text;
  dashboard.queueNoticeTimer = setTimeout(() => {
    ui.queueNotice.textContent = '';
  }, QUEUE_NOTICE_MS);
}

// ---------------------------------------------------------------------------
// Chats

function createChat(conversation, startedAt) {
  const chat = {
    conversation,
    label: labelForIndex(dashboard.nextLabelIndex),
    startedAt: parseTime(startedAt),
    ended: false,
    ending: false,
    renderedSeqs: new Set(),
    lastSeq: 0, // highest seq with every seq up to it rendered; sent in hello
    pending: new Map(), // client_id → reply not yet acknowledged
    whispers: new Set(), // ids of the whispers shown
    unread: 0,
    elements: null,
  };
  dashboard.nextLabelIndex += 1;
  dashboard.closedConversations.delete(conversation);
  chat.elements = buildChatPanel(chat);
  ui.chatPanels.append(chat.elements.panel);
  dashboard.chats.set(conversation, chat);
  return chat;
}

// Builds the panel of one chat. Every handler here closes over `chat`, whose conversation
// never changes, so the panel can only act on its own conversation.
function buildChatPanel(chat) {
  const panelId = nextElementId();
  const panel = document.createElement('section');
  panel.className = 'chat';
  panel.setAttribute('aria-label', _('Chat with %(label)s', { label: chat.label }));

  const header = buildChatHeader(chat);
  const log = document.createElement('div');
  log.className = 'chat-log';
  log.setAttribute('role', 'log');
  log.setAttribute('aria-label', _('Messages with %(label)s', { label: chat.label }));
  log.tabIndex = 0;

  const alert = document.createElement('p');
  alert.className = 'chat-alert';
  alert.setAttribute('role', 'alert');

  const endedNotice = buildEndedNotice(chat);
  const replyForm = buildReplyForm(chat, panelId);
  const endControls = buildEndControls(chat);
  const support = buildSupportControls(() => requestSupport(chat));
  endControls.element.append(support.element);
  const hardChat = buildHardChatControl(() => markChatHard(chat));
  endedNotice.element.insertBefore(hardChat.element, endedNotice.closeButton);
  const resourceSearch = buildResourceSearch({
    onCard: (resource, language) => shareResource(chat, resource, language),
    onReply: (text) => insertSavedReply(chat, text),
  });

  panel.append(
    header.element,
    log,
    alert,
    endedNotice.element,
    replyForm.element,
    resourceSearch,
    endControls.element,
  );
  panel.addEventListener('focusin', () => clearUnread(chat));
  panel.addEventListener('pointerdown', () => clearUnread(chat));

  return {
    panel,
    log,
    alert,
    heading: header.heading,
    unreadBadge: header.unreadBadge,
    transportBadge: header.transportBadge,
    languageBadge: header.languageBadge,
    visitorStatus: header.visitorStatus,
    endedNotice: endedNotice.element,
    endedTitle: endedNotice.title,
    endedReason: endedNotice.reason,
    closeButton: endedNotice.closeButton,
    notesLink: endedNotice.notesLink,
    supportButton: support.button,
    supportStatus: support.status,
    hardChat: hardChat.element,
    hardChatButton: hardChat.button,
    form: replyForm.element,
    textarea: replyForm.textarea,
    hint: replyForm.hint,
    counter: replyForm.counter,
    sendButton: replyForm.sendButton,
    endControls: endControls.element,
    endButton: endControls.endButton,
    blockButton: endControls.blockButton,
    confirmGroup: endControls.confirmGroup,
    confirmQuestion: endControls.question,
    confirmYes: endControls.yesButton,
    confirmNo: endControls.noButton,
  };
}

function buildChatHeader(chat) {
  const element = document.createElement('header');
  element.className = 'chat-header';

  const heading = document.createElement('h3');
  heading.className = 'chat-title';
  heading.tabIndex = -1;
  heading.textContent = chat.label;

  const unreadBadge = document.createElement('span');
  unreadBadge.className = 'badge';
  unreadBadge.hidden = true;
  heading.append(' ', unreadBadge);

  // Shown while the visitor uses the chat page with scripts off; their page reloads
  // the conversation every few seconds, so replies reach them a little later.
  const transportBadge = document.createElement('span');
  transportBadge.className = 'badge badge-noscript';
  transportBadge.hidden = true;
  transportBadge.textContent = _('no script');
  transportBadge.title = _('The visitor has scripts switched off. Your replies reach them within a few seconds.');
  heading.append(' ', transportBadge);

  // The language the visitor chose on the chat page, so the reply can be in it.
  const languageBadge = document.createElement('span');
  languageBadge.className = 'badge badge-language';
  languageBadge.hidden = true;
  heading.append(' ', languageBadge);

  const started = document.createElement('p');
  started.className = 'chat-meta';
  started.append(_('Started'), ' ');
  started.append(buildTimeElement(chat.startedAt));

  const visitorStatus = document.createElement('p');
  visitorStatus.className = 'visitor-status';
  visitorStatus.setAttribute('role', 'status');
  visitorStatus.dataset.connected = 'true';
  visitorStatus.textContent = _('Visitor connected');

  element.append(heading, started, visitorStatus);
  return { element, heading, unreadBadge, transportBadge, languageBadge, visitorStatus };
}

function buildEndedNotice(chat) {
  const element = document.createElement('div');
  element.className = 'ended-notice';
  element.hidden = true;

  const title = document.createElement('p');
  title.className = 'ended-title';
  title.tabIndex = -1;
  title.textContent = _('This chat has ended');

  const reason = document.createElement('p');
  reason.className = 'ended-reason';

  const closeButton = document.createElement('button');
  closeButton.type = 'button';
  closeButton.textContent = _('Close');
  closeButton.addEventListener('click', () => closeChat(chat));

  // The case note form opens in a new tab, so that this dashboard stays connected.
  const notesLink = document.createElement('a');
  notesLink.className = 'notes-link';
  notesLink.href = `/dashboard/notes/${encodeURIComponent(chat.conversation)}`;
  notesLink.target = '_blank';
  notesLink.textContent = _('Write the case note');

  element.append(title, reason, notesLink, closeButton);
  return { element, title, reason, closeButton, notesLink };
}

function buildReplyForm(chat, panelId) {
  const element = document.createElement('form');
  element.className = 'reply-form';
  element.noValidate = true;

  const textareaId = `reply-${panelId}`;
  const hintId = `reply-hint-${panelId}`;
  const counterId = `reply-counter-${panelId}`;

  const label = document.createElement('label');
  label.htmlFor = textareaId;
  label.textContent = _('Reply');

  const textarea = document.createElement('textarea');
  textarea.id = textareaId;
  textarea.rows = 3;
  textarea.dir = 'auto';
  textarea.setAttribute('aria-describedby', `${hintId} ${counterId}`);

  const hint = document.createElement('p');
  hint.id = hintId;
  hint.className = 'hint';
  hint.textContent = _('Enter sends. Shift+Enter starts a new line.');

  const counter = document.createElement('p');
  counter.id = counterId;
  counter.className = 'reply-counter';

  const sendButton = document.createElement('button');
  sendButton.type = 'submit';
  sendButton.className = 'button-primary';
  sendButton.textContent = _('Send');

  element.append(label, textarea, hint, counter, sendButton);
  element.addEventListener('submit', (event) => {
    event.preventDefault();
    submitReply(chat);
  });
  textarea.addEventListener('keydown', (event) => handleReplyKeydown(event, element));
  textarea.addEventListener('input', () => {
    clearChatAlert(chat);
    updateReplyCounter(chat);
  });
  return { element, textarea, hint, counter, sendButton };
}

function buildEndControls(chat) {
  const element = document.createElement('div');
  element.className = 'end-controls';

  const endButton = document.createElement('button');
  endButton.type = 'button';
  endButton.textContent = _('End chat');

  const blockButton = document.createElement('button');
  blockButton.type = 'button';
  blockButton.className = 'button-danger';
  blockButton.textContent = _('Block visitor');

  const confirmGroup = document.createElement('div');
  confirmGroup.className = 'end-confirm';
  confirmGroup.setAttribute('role', 'group');
  confirmGroup.hidden = true;

  const question = document.createElement('p');
  question.className = 'end-question';
  question.id = `end-question-${nextElementId()}`;
  question.textContent = _('End this chat?');
  confirmGroup.setAttribute('aria-labelledby', question.id);

  const yesButton = document.createElement('button');
  yesButton.type = 'button';
  yesButton.className = 'button-danger';
  yesButton.textContent = _('Yes, end chat');

  const noButton = document.createElement('button');
  noButton.type = 'button';
  noButton.textContent = _('No');

  confirmGroup.append(question, yesButton, noButton);
  element.append(endButton, blockButton, confirmGroup);

  endButton.addEventListener('click', () => askToEndChat(chat, 'end'));
  blockButton.addEventListener('click', () => askToEndChat(chat, 'block'));
  yesButton.addEventListener('click', () => endChat(chat));
  noButton.addEventListener('click', () => cancelEndChat(chat));
  confirmGroup.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') {
      cancelEndChat(chat);
    }
  });
  return { element, endButton, blockButton, confirmGroup, question, yesButton, noButton };
}

function handleReplyKeydown(event, form) {
  if (event.key !== 'Enter' || event.shiftKey || event.altKey || event.ctrlKey || event.metaKey) {
    return;
  }
  // While an input method is composing, Enter confirms the composition.
  if (event.isComposing || event.keyCode === 229) {
    return;
  }
  event.preventDefault();
  form.requestSubmit();
}

function updateReplyCounter(chat) {
  const length = countCharacters(chat.elements.textarea.value.trim());
  const counter = chat.elements.counter;
  if (length > MAX_BODY_CHARS) {
    counter.textContent = _('%(count)s characters over the limit of 4,000', { count: length - MAX_BODY_CHARS });
    counter.dataset.over = 'true';
  } else if (length > MAX_BODY_CHARS - 400) {
    counter.textContent = _('%(count)s characters left', { count: MAX_BODY_CHARS - length });
    delete counter.dataset.over;
  } else {
    counter.textContent = '';
    delete counter.dataset.over;
  }
}

function submitReply(chat) {
  if (chat.ended || connection.signedOut) {
    return;
  }
  const textarea = chat.elements.textarea;
  const body = textarea.value.trim();
  const length = countCharacters(body);
  if (length === 0) {
    showChatAlert(chat, _('Write a reply before sending.'));
    return;
  }
  if (length > MAX_BODY_CHARS) {
    showChatAlert(chat, _('The reply has %(count)s characters. Shorten it to 4,000 or fewer to send it.', { count: length }));
    return;
  }
  clearChatAlert(chat);

  const clientId = createClientId();
  const element = buildMessageElement('volunteer', body, new Date());
  element.classList.add('pending');
  const status = document.createElement('p');
  status.className = 'message-status';
  status.textContent = _('Sending…');
  element.append(status);

  const pending = { clientId, body, element, status };
  chat.pending.set(clientId, pending);
  appendToLog(chat, element);
  sendReply(chat, pending);

  textarea.value = '';
  updateReplyCounter(chat);
}

// Asks the relay to send a resource card; the card appears when its message frame comes.
function shareResource(chat, resource, language) {
  if (chat.ended || connection.signedOut) {
    return;
  }
  const sent = sendFrame({
    type: 'resource',
    conversation: chat.conversation,
    client_id: createClientId(),
    resource,
    language,
  });
  if (sent) {
    clearChatAlert(chat);
  } else {
    showChatAlert(chat, _('Not connected, so the card was not sent. Try again when the dashboard reconnects.'));
  }
}

// Puts a saved reply in the reply box, after any text already there; it is not sent.
function insertSavedReply(chat, text) {
  if (chat.ended) {
    return;
  }
  const textarea = chat.elements.textarea;
  const draft = textarea.value.trimEnd();
  textarea.value = draft ? `${draft}\n\n${text}` : text;
  updateReplyCounter(chat);
  textarea.focus();
}

// Sends one reply. A reply sent while disconnected stays pending and goes out with the same
// client_id after the next state frame, and the relay stores a repeated client_id once.
function sendReply(chat, pending) {
  sendFrame({
    type: 'send',
    conversation: chat.conversation,
    client_id: pending.clientId,
    body: pending.body,
  });
}

function resendPendingReplies() {
  for (const chat of dashboard.chats.values()) {
    if (chat.ended) {
      continue;
    }
    for (const pending of chat.pending.values()) {
      setReplyStatus(pending, _('Sending…'));
      sendReply(chat, pending);
    }
  }
}

function markReplySent(pending) {
  pending.element.classList.remove('pending');
  pending.status.remove();
  if (pending.retryButton) {
    pending.retryButton.remove();
  }
}

function markReplyRetryable(chat, pending) {
  setReplyStatus(pending, _('Not saved yet'));
  if (pending.retryButton) {
    return;
  }
  const retryButton = document.createElement('button');
  retryButton.type = 'button';
  retryButton.className = 'button-small';
  retryButton.textContent = _('Retry');
  retryButton.addEventListener('click', () => {
    if (!chat.pending.has(pending.clientId)) {
      return;
    }
    retryButton.remove();
    pending.retryButton = null;
    setReplyStatus(pending, _('Sending…'));
    clearChatAlert(chat);
    sendReply(chat, pending);
  });
  pending.retryButton = retryButton;
  pending.element.append(retryButton);
}

function markReplyFailed(chat, pending, text) {
  chat.pending.delete(pending.clientId);
  pending.element.classList.remove('pending');
  pending.element.classList.add('failed');
  setReplyStatus(pending, text);
  if (pending.retryButton) {
    pending.retryButton.remove();
    pending.retryButton = null;
  }
}

function setReplyStatus(pending, text) {
  pending.status.textContent = text;
}

// Puts a reply that was not sent back into the empty reply box, so it is not lost.
function restoreDraft(chat, body) {
  const textarea = chat.elements.textarea;
  if (textarea.value.trim() === '' && !chat.ended) {
    textarea.value = body;
    updateReplyCounter(chat);
  }
}

function renderMessage(chat, message) {
  if (chat.renderedSeqs.has(message.seq)) {
    return;
  }
  if (message.sender === 'volunteer' && typeof message.client_id === 'string') {
    const pending = chat.pending.get(message.client_id);
    if (pending) {
      chat.pending.delete(message.client_id);
      pending.element.remove();
    }
  }
  const element = buildMessageElement(
    message.sender,
    String(message.body ?? ''),
    parseTime(message.sent_at),
    senderLabel(message),
    isResourceCard(message.resource) ? message.resource : null,
  );
  placeMessage(chat, element, message.seq);
  if (message.sender === 'visitor') {
    countUnread(chat);
  }
}

// Replies written before a hand-back came from another volunteer; the relay marks the
// volunteer's own replies with mine=true.
function senderLabel(message) {
  if (message.sender === 'visitor') {
    return _('Visitor');
  }
  if (message.mine === false && message.supervisor === true) {
    return typeof message.author === 'string' ? `${message.author} (supervisor)` : 'Supervisor';
  }
  if (message.mine === false) {
    return typeof message.author === 'string' ? _('%(name)s (earlier volunteer)', { name: message.author }) : _('Earlier volunteer');
  }
  return _('You');
}

// A message with a resource `card` shows the card; its body is the card as plain text.
function buildMessageElement(sender, body, sentAt, label = null, card = null) {
  const fromVisitor = sender === 'visitor';
  const element = document.createElement('article');
  element.className = fromVisitor ? 'message from-visitor' : 'message from-you';

  const meta = document.createElement('p');
  meta.className = 'message-meta';
  const senderName = document.createElement('span');
  senderName.className = 'message-sender';
  senderName.textContent = label ?? (fromVisitor ? _('Visitor') : _('You'));
  meta.append(senderName, ' ', buildTimeElement(sentAt));

  if (card) {
    element.append(meta, buildResourceCard(card, { labels: CARD_LABELS }));
    return element;
  }
  const text = document.createElement('p');
  text.className = 'message-body';
  text.dir = 'auto';
  appendLinkedText(text, body);

  element.append(meta, text);
  return element;
}

// Inserts a stored message by seq: after every message with a lower seq and before any
// reply still waiting for its ack.
function placeMessage(chat, element, seq) {
  element.dataset.seq = String(seq);
  const log = chat.elements.log;
  const atBottom = isScrolledToBottom(log);
  let before = null;
  for (const child of log.children) {
    // A whisper written after message n (data-after-seq n) stays after it.
    if (child.classList.contains('pending') || Number(child.dataset.seq) > seq || Number(child.dataset.afterSeq) >= seq) {
      before = child;
      break;
    }
  }
  log.insertBefore(element, before);

  chat.renderedSeqs.add(seq);
  while (chat.renderedSeqs.has(chat.lastSeq + 1)) {
    chat.lastSeq += 1;
  }
  if (atBottom) {
    log.scrollTop = log.scrollHeight;
  }
}

function appendToLog(chat, element) {
  const log = chat.elements.log;
  log.append(element);
  log.scrollTop = log.scrollHeight;
}

function isScrolledToBottom(log) {
  return log.scrollHeight - log.scrollTop - log.clientHeight < 40;
}

function setVisitorConnected(chat, connected) {
  const status = chat.elements.visitorStatus;
  const text = connected ? _('Visitor connected') : _('Connection lost — waiting for them to come back');
  if (status.textContent !== text) {
    status.textContent = text;
  }
  status.dataset.connected = String(connected);
}

// `transport` is "noscript" or "script"; older relays send none, which means script.
function setTransport(chat, transport) {
  if (transport !== 'noscript' && transport !== 'script') {
    return;
  }
  chat.elements.transportBadge.hidden = transport !== 'noscript';
}

// `language` is the code of the visitor's language, such as "mt"; older relays send none.
function setLanguage(chat, language) {
  if (typeof language !== 'string' || language === '') {
    return;
  }
  setLanguageText(chat.elements.languageBadge, language);
  chat.elements.languageBadge.hidden = false;
}

// Shows a language's name in the dashboard's language, from the page's
// #language-names block, and marks the element with the code.
function setLanguageText(element, language) {
  if (typeof language !== 'string' || language === '') {
    element.textContent = '';
    return;
  }
  element.textContent = LANGUAGE_NAMES[language] || language;
  element.dataset.language = language;
}

// `action` is "end" or "block"; both end the chat after the volunteer confirms.
function askToEndChat(chat, action) {
  const elements = chat.elements;
  chat.confirmAction = action;
  elements.confirmQuestion.textContent = CONFIRM_TEXT[action].question;
  elements.confirmYes.textContent = CONFIRM_TEXT[action].yes;
  elements.endButton.hidden = true;
  elements.blockButton.hidden = true;
  elements.confirmGroup.hidden = false;
  // "No" gets the focus so that a second press of Enter cannot end the chat.
  elements.confirmNo.focus();
}

function cancelEndChat(chat) {
  if (chat.ending) {
    return;
  }
  resetEndControls(chat);
  chat.elements.endButton.focus();
}

function endChat(chat) {
  if (chat.ended || chat.ending) {
    return;
  }
  const action = chat.confirmAction || 'end';
  if (!sendFrame({ type: action, conversation: chat.conversation })) {
    resetEndControls(chat);
    showChatAlert(chat, _('Not connected, so the chat was not ended. Try again when the connection is back.'));
    return;
  }
  chat.ending = true;
  chat.elements.confirmQuestion.textContent = CONFIRM_TEXT[action].busy;
  chat.elements.confirmYes.disabled = true;
  chat.elements.confirmNo.disabled = true;
}

function resetEndControls(chat) {
  const elements = chat.elements;
  chat.ending = false;
  chat.confirmAction = 'end';
  elements.confirmQuestion.textContent = CONFIRM_TEXT.end.question;
  elements.confirmYes.textContent = CONFIRM_TEXT.end.yes;
  elements.confirmYes.disabled = false;
  elements.confirmNo.disabled = false;
  elements.confirmGroup.hidden = true;
  elements.endButton.hidden = false;
  elements.blockButton.hidden = false;
}

// Shows the chat as ended. `reason` is the reason of an ended frame, or null when the chat
// was missing from a state frame.
function markChatEnded(chat, reason) {
  if (chat.ended) {
    return;
  }
  const elements = chat.elements;
  const hadFocus = elements.panel.contains(document.activeElement);
  const reasonText = ENDED_REASON_TEXT[reason] || ENDED_WHILE_DISCONNECTED_TEXT;

  chat.ended = true;
  resetEndControls(chat);
  elements.endControls.hidden = true;
  elements.panel.classList.add('ended');
  elements.visitorStatus.hidden = true;
  elements.endedReason.textContent = reasonText;
  // A chat handed back belongs to whoever answers it next; a deleted one has no note.
  elements.notesLink.hidden = reason === 'handed_back' || reason === 'deleted';
  elements.endedNotice.hidden = false;
  clearChatAlert(chat);
  setReplyFormEnabled(chat, false);
  for (const pending of [...chat.pending.values()]) {
    markReplyFailed(chat, pending, _('Not sent — the chat ended'));
  }
  connection.replaying.delete(chat.conversation);

  const endedText = _('The chat with %(label)s has ended.', { label: chat.label });
  announce(`${endedText} ${reasonText}`);
  // Focus goes to the notice, not to "Close": a volunteer pressing Enter to send a reply
  // at that moment must not remove the transcript.
  if (hadFocus) {
    elements.endedTitle.focus();
  }
  updateChatsSummary();
}

// Makes an ended chat active again, for a visitor handed back to the queue and then
// accepted again by this volunteer.
function reopenChat(chat) {
  const elements = chat.elements;
  chat.ended = false;
  elements.panel.classList.remove('ended');
  elements.endedNotice.hidden = true;
  elements.visitorStatus.hidden = false;
  elements.endControls.hidden = false;
  resetEndControls(chat);
  clearChatAlert(chat);
  setReplyFormEnabled(chat, true);
  setVisitorConnected(chat, true);
}

function closeChat(chat) {
  const panels = [...ui.chatPanels.children];
  const index = panels.indexOf(chat.elements.panel);
  chat.elements.panel.remove();
  dashboard.chats.delete(chat.conversation);
  dashboard.closedConversations.add(chat.conversation);
  updateChatsSummary();
  updateTitle();

  const next = ui.chatPanels.children[index] || ui.chatPanels.children[index - 1];
  const nextChat = next ? [...dashboard.chats.values()].find((candidate) => candidate.elements.panel === next) : null;
  if (nextChat) {
    nextChat.elements.heading.focus();
  } else {
    ui.chatsHeading.focus();
  }
}

function setReplyFormEnabled(chat, enabled) {
  chat.elements.textarea.disabled = !enabled;
  chat.elements.sendButton.disabled = !enabled;
  chat.elements.hint.hidden = !enabled;
}

function showChatAlert(chat, text) {
  chat.elements.alert.textContent = text;
}

function clearChatAlert(chat) {
  chat.elements.alert.textContent = '';
}

function updateChatsSummary() {
  let active = 0;
  for (const chat of dashboard.chats.values()) {
    if (!chat.ended) {
      active += 1;
    }
  }
  ui.chatsEmpty.hidden = dashboard.chats.size > 0;
  ui.chatCount.textContent = dashboard.capacity === null ? '' : _('(%(active)s of %(capacity)s)', { active, capacity: dashboard.capacity });
}

// ---------------------------------------------------------------------------
// Supervision and wellbeing

function handleWhisper(frame) {
  const chat = dashboard.chats.get(frame.conversation);
  if (!chat || chat.whispers.has(frame.id)) {
    return;
  }
  chat.whispers.add(frame.id);
  const element = buildWhisperElement(frame, buildTimeElement(parseTime(frame.sent_at)));
  const log = chat.elements.log;
  const atBottom = isScrolledToBottom(log);
  placeWhisper(log, element, Number(element.dataset.afterSeq));
  if (atBottom) {
    log.scrollTop = log.scrollHeight;
  }
  announce(_('Whisper from %(author)s in the chat with %(label)s.', { author: frame.author, label: chat.label }));
  countUnread(chat);
}

function handleSupervisorPresence(frame) {
  const chat = dashboard.chats.get(frame.conversation);
  if (!chat) {
    return;
  }
  const text = frame.type === 'supervisor_joined'
    ? `${frame.name} (supervisor) joined the chat with ${chat.label}; the visitor sees their messages.`
    : `${frame.name} (supervisor) left the chat with ${chat.label}.`;
  chat.elements.supportStatus.textContent = text;
  announce(text);
}

function requestSupport(chat) {
  if (chat.ended) {
    return;
  }
  if (!sendFrame({ type: 'need_support', conversation: chat.conversation })) {
    showChatAlert(chat, _('Not connected, so no supervisor was alerted. Try again when the connection is back.'));
    return;
  }
  chat.elements.supportButton.disabled = true;
  chat.elements.supportStatus.textContent = _('Alerting the supervisors…');
}

function handleSupportRequested(frame) {
  const chat = dashboard.chats.get(frame.conversation);
  if (!chat) {
    return;
  }
  chat.elements.supportButton.disabled = false;
  chat.elements.supportStatus.textContent =
    frame.supervisors_online > 0 ? SUPPORT_TEXT.requested : SUPPORT_TEXT.nobody;
}

// A supervisor acknowledged a request: as the volunteer who asked (with `conversation`),
// or as another supervisor watching the alerts.
function handleSupportAcknowledged(frame) {
  dashboard.supportAlerts.delete(frame.id);
  renderSupervisorAlerts();
  const chat = frame.conversation ? dashboard.chats.get(frame.conversation) : undefined;
  if (chat) {
    chat.elements.supportStatus.textContent = SUPPORT_TEXT.acknowledged(frame.by);
    announce(SUPPORT_TEXT.acknowledged(frame.by));
  }
}

// Supervisors only: a volunteer asked for support.
function handleSupportAlert(frame) {
  dashboard.supportAlerts.set(frame.id, frame);
  renderSupervisorAlerts();
  announce(_('%(name)s needs support.', { name: frame.volunteer }));
  playChime();
}

function renderSupervisorAlerts() {
  const count = dashboard.supportAlerts.size;
  ui.supervisorAlerts.hidden = count === 0;
  const names = [...new Set([...dashboard.supportAlerts.values()].map((alert) => alert.volunteer))];
  ui.supervisorAlertsText.textContent = count === 0 ? '' : _('Support needed: %(names)s.', { names: names.join(', ') });
  updateTitle();
}

function markChatHard(chat) {
  if (!sendFrame({ type: 'hard_chat', conversation: chat.conversation })) {
    showNotice(_('Not connected, so the chat was not marked. Try again when the connection is back.'));
    return;
  }
  chat.elements.hardChatButton.disabled = true;
  chat.elements.hardChatButton.textContent = _('Marked as hard');
}

function showBreak(until) {
  const end = parseTime(until);
  ui.breakText.textContent = end
    ? _('You are on a break until %(time)s. No new chats are offered to you until then.', { time: formatClock(end) })
    : _('You are on a break. No new chats are offered to you.');
  ui.breakBanner.hidden = false;
}

function hideBreak() {
  ui.breakBanner.hidden = true;
  announce(_('Your break has ended.'));
}

// ---------------------------------------------------------------------------
// Unread counts and the document title

// Counts a visitor message as unread unless the volunteer is looking at that panel.
function countUnread(chat) {
  if (connection.replaying.has(chat.conversation)) {
    return;
  }
  if (!document.hidden && chat.elements.panel.contains(document.activeElement)) {
    return;
  }
  chat.unread += 1;
  renderUnread(chat);
  updateTitle();
}

function clearUnread(chat) {
  if (chat.unread === 0) {
    return;
  }
  chat.unread = 0;
  renderUnread(chat);
  updateTitle();
}

function renderUnread(chat) {
  const badge = chat.elements.unreadBadge;
  badge.hidden = chat.unread === 0;
  badge.textContent = _('%(count)s unread', { count: chat.unread });
}

function handleVisibilityChange() {
  if (!document.hidden) {
    for (const chat of dashboard.chats.values()) {
      if (chat.elements.panel.contains(document.activeElement)) {
        clearUnread(chat);
      }
    }
  }
  updateTitle();
}

function updateTitle() {
  const parts = [];
  if (dashboard.supportAlerts.size > 0) {
    parts.push(`(${dashboard.supportAlerts.size}) Support needed`);
  }
  const waiting = dashboard.queueEntries.length;
  if (waiting > 0) {
    parts.push(_('(%(count)s) Waiting', { count: waiting }));
  }
  if (document.hidden) {
    let unread = 0;
    for (const chat of dashboard.chats.values()) {
      unread += chat.unread;
    }
    if (unread > 0) {
      parts.push(_('%(count)s unread', { count: unread }));
    }
  }
  document.title = parts.length > 0 ? `${parts.join(' · ')} — ${BASE_TITLE}` : BASE_TITLE;
}

// ---------------------------------------------------------------------------
// Status line, notices and small helpers

function showConnectionStatus(text, state, link) {
  const status = ui.connectionStatus;
  status.dataset.state = state;
  status.replaceChildren(text);
  if (link) {
    const anchor = document.createElement('a');
    anchor.href = link.href;
    anchor.textContent = link.text;
    status.append(' ', anchor);
  }
}

function updateControlsForConnection() {
  ui.available.disabled = !connection.open || connection.signedOut;
  updateAcceptButtons();
  updateQueueHint();
}

function showNotice(text) {
  ui.notice.textContent = text;
  ui.noticeDismiss.hidden = false;
}

function clearNotice() {
  ui.notice.textContent = '';
  ui.noticeDismiss.hidden = true;
}

function announce(text) {
  ui.announcer.textContent = text;
}

function buildTimeElement(date) {
  const time = document.createElement('time');
  if (date) {
    time.dateTime = date.toISOString();
    time.textContent = formatClock(date);
  } else {
    time.textContent = '--:--';
  }
  return time;
}

function parseTime(value) {
  if (typeof value !== 'string') {
    return null;
  }
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

// Formats a time as local HH:MM on a 24-hour clock.
function formatClock(date) {
  const hours = String(date.getHours()).padStart(2, '0');
  const minutes = String(date.getMinutes()).padStart(2, '0');
  return `${hours}:${minutes}`;
}

// Returns "Visitor A" … "Visitor Z", then "Visitor AA", "Visitor AB" and so on.
function labelForIndex(index) {
  let letters = '';
  let rest = index;
  do {
    letters = String.fromCharCode(65 + (rest % 26)) + letters;
    rest = Math.floor(rest / 26) - 1;
  } while (rest >= 0);
  return _('Visitor %(letters)s', { letters });
}

function createClientId() {
  const bytes = crypto.getRandomValues(new Uint8Array(CLIENT_ID_LENGTH));
  let id = '';
  for (const byte of bytes) {
    id += CLIENT_ID_ALPHABET[byte & 63];
  }
  return id;
}

// Counts Unicode code points, as the relay does when it checks the 4,000 character limit.
function countCharacters(text) {
  let count = 0;
  for (const _ of text) {
    count += 1;
  }
  return count;
}

function nextElementId() {
  dashboard.elementCount += 1;
  return dashboard.elementCount;
}

main();
