// Supervision page: the live overview over the dashboard WebSocket (data-ws-url), one
// conversation opened read-only, whispers, joining and transfers. The frames are the
// supervision frames of docs/protocol.md.
//
// The open conversation's id is captured when it is opened; every form on the panel
// reads it from `panel.conversation`, which only openConversation() and closePanel()
// change. Text from the relay reaches the DOM only through textContent.

import { appendLinkedText, readJsonBlock, translator } from '/static/text.js';

// Texts in the page's language, from the JSON block #supervision-text that the relay
// fills from this file's _() calls.
const _ = translator(readJsonBlock('supervision-text'));

const PING_INTERVAL_MS = 25_000;
const RECONNECT_MAX_MS = 15_000;
const REFRESH_MS = 15_000;
const BASE_TITLE = 'Supervision';
const CLOSE_CODE_SIGNED_OUT = 4001;
const CLIENT_ID_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-';

// Frames a dashboard socket also receives as a volunteer's; this page has no use for them.
const IGNORED_FRAMES = new Set([
  'queue', 'availability', 'assigned', 'ended', 'visitor_status', 'deleted', 'state',
  'supervisor_joined', 'supervisor_left', 'break', 'break_ended', 'support_requested',
]);

const ui = {};
const state = {
  socket: null,
  open: false,
  signedOut: false,
  reconnectAttempt: 0,
  pingTimer: null,
  overview: null,
  soundOn: false,
  audioContext: null,
};
const panel = {
  conversation: null,
  joined: false,
  seqs: new Set(),
  whispers: new Set(),
};

function main() {
  for (const id of [
    'supervision', 'connection-status', 'notice', 'sound-toggle', 'alert-badge', 'alerts-empty',
    'alert-list', 'conversations-empty', 'conversation-rows', 'volunteer-rows',
    'conversation-panel', 'panel-heading', 'panel-status', 'panel-log', 'panel-alert',
    'whisper-form', 'whisper-text', 'join-form', 'join-text', 'join-button', 'leave-button',
    'transfer-select', 'transfer-button', 'panel-close', 'announcer',
  ]) {
    const element = document.getElementById(id);
    if (!element) {
      throw new Error(`supervision.html has no element with id "${id}"`);
    }
    ui[id.replace(/-([a-z])/g, (_, letter) => letter.toUpperCase())] = element;
  }
  ui.soundToggle.hidden = false;
  ui.soundToggle.addEventListener('click', toggleSound);
  ui.whisperForm.addEventListener('submit', (event) => {
    event.preventDefault();
    sendWhisper();
  });
  ui.joinForm.addEventListener('submit', (event) => {
    event.preventDefault();
    sendToVisitor();
  });
  ui.joinButton.addEventListener('click', () => sendFrame({ type: 'join', conversation: panel.conversation }));
  ui.leaveButton.addEventListener('click', () => sendFrame({ type: 'leave', conversation: panel.conversation }));
  ui.transferButton.addEventListener('click', transferConversation);
  ui.panelClose.addEventListener('click', closePanel);
  setInterval(renderOverview, REFRESH_MS);
  connect();
}

// ---------------------------------------------------------------------------
// Connection

function connect() {
  if (state.signedOut) {
    return;
  }
  const socket = new WebSocket(ui.supervision.dataset.wsUrl);
  state.socket = socket;
  socket.addEventListener('open', () => {
    state.open = true;
    state.reconnectAttempt = 0;
    setStatus('Connected; the overview updates live.', 'connected');
    sendFrame({ type: 'supervise' });
    if (panel.conversation !== null) {
      openConversation(panel.conversation);
    }
    state.pingTimer = setInterval(() => sendFrame({ type: 'ping' }), PING_INTERVAL_MS);
  });
  socket.addEventListener('message', (event) => {
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch (error) {
      console.error('Ignored a frame that is not JSON', error);
      return;
    }
    dispatch(frame);
  });
  socket.addEventListener('close', (event) => {
    if (socket !== state.socket) {
      return;
    }
    state.open = false;
    clearInterval(state.pingTimer);
    if (event.code === CLOSE_CODE_SIGNED_OUT) {
      state.signedOut = true;
      setStatus(_('You have been signed out.'), 'signed-out');
      return;
    }
    const delay = Math.min(RECONNECT_MAX_MS, 500 * 2 ** state.reconnectAttempt);
    state.reconnectAttempt += 1;
    setStatus('Reconnecting…', 'connecting');
    setTimeout(connect, delay);
  });
}

function sendFrame(frame) {
  if (!state.socket || !state.open) {
    showNotice(_('Not connected. Try again when the connection is back.'));
    return false;
  }
  state.socket.send(JSON.stringify(frame));
  return true;
}

function dispatch(frame) {
  switch (frame.type) {
    case 'overview':
      state.overview = frame;
      renderOverview();
      break;
    case 'watching':
      handleWatching(frame);
      break;
    case 'message':
      if (frame.conversation === panel.conversation) {
        renderMessage(frame);
      }
      break;
    case 'whisper':
      if (frame.conversation === panel.conversation) {
        renderWhisper(frame);
      }
      break;
    case 'joined':
    case 'left':
      if (frame.conversation === panel.conversation) {
        setJoined(frame.type === 'joined');
      }
      break;
    case 'ack':
      break; // the message frame that follows shows the stored message
    case 'support_alert':
      announceAlert(frame);
      break;
    case 'support_acknowledged':
      announce(`${frame.by} acknowledged a support request.`);
      break;
    case 'hard_chat':
      announce(`${frame.volunteer} marked a chat as hard and is taking a break.`);
      break;
    case 'error':
      handleError(frame);
      break;
    case 'pong':
      break;
    default:
      if (!IGNORED_FRAMES.has(frame.type)) {
        console.error(`Unknown frame type "${frame.type}" from the relay`, frame);
      }
  }
}

function handleError(frame) {
  const text = frame.message || _('The relay rejected a request (%(code)s).', { code: frame.code });
  if (frame.conversation !== undefined && frame.conversation === panel.conversation) {
    ui.panelAlert.textContent = text;
  } else {
    showNotice(text);
  }
}

// ---------------------------------------------------------------------------
// Overview

function renderOverview() {
  const overview = state.overview;
  if (!overview) {
    return;
  }
  renderAlerts(overview.alerts || []);
  renderConversations(overview.conversations || []);
  renderVolunteers(overview.volunteers || []);
  renderTransferChoices(overview);
  if (panel.conversation !== null) {
    const entry = (overview.conversations || []).find((item) => item.conversation === panel.conversation);
    ui.panelStatus.textContent = entry ? describeConversation(entry) : _('This conversation has ended.');
  }
  const alerts = (overview.alerts || []).length;
  document.title = alerts > 0 ? `(${alerts}) Need support — ${BASE_TITLE}` : BASE_TITLE;
}

function renderAlerts(alerts) {
  ui.alertBadge.hidden = alerts.length === 0;
  ui.alertBadge.textContent = String(alerts.length);
  ui.alertsEmpty.hidden = alerts.length > 0;
  const items = alerts.map((alert) => {
    const item = document.createElement('li');
    item.className = 'alert-item';
    item.append(`${alert.volunteer} asked for support in chat ${shortId(alert.conversation)} at ${clock(alert.raised_at)}. `);
    if (alert.conversation) {
      item.append(button('Open', () => openConversation(alert.conversation)), ' ');
    }
    item.append(button('Acknowledge', () => sendFrame({ type: 'acknowledge', alert: alert.id })));
    return item;
  });
  ui.alertList.replaceChildren(...items);
}

function renderConversations(conversations) {
  ui.conversationsEmpty.hidden = conversations.length > 0;
  const rows = conversations.map((entry) => {
    const row = document.createElement('tr');
    const status = entry.status === 'waiting' ? _('Waiting (number %(position)s)', { position: entry.position }) : _('Active');
    const flags = [];
    if (entry.support_alert) flags.push('needs support');
    if (!entry.visitor_connected) flags.push('visitor disconnected');
    if (entry.transport === 'noscript') flags.push('no script');
    if (entry.joined.length > 0) flags.push(`joined by ${entry.joined.join(', ')}`);
    const cells = [
      shortId(entry.conversation),
      entry.site,
      [status, ...flags].join(' · '),
      minutesText(entry.assigned_at || entry.created_at),
      entry.volunteer || '–',
      String(entry.unanswered),
    ];
    for (const text of cells) {
      const cell = document.createElement('td');
      cell.textContent = text;
      row.append(cell);
    }
    const actions = document.createElement('td');
    const openButton = button('Open', () => openConversation(entry.conversation));
    openButton.setAttribute('aria-label', _('Open chat %(chat)s', { chat: shortId(entry.conversation) }));
    actions.append(openButton);
    row.append(actions);
    if (entry.support_alert) {
      row.classList.add('row-alert');
    }
    return row;
  });
  ui.conversationRows.replaceChildren(...rows);
}

function renderVolunteers(volunteers) {
  const rows = volunteers.map((volunteer) => {
    const row = document.createElement('tr');
    let now = 'Offline';
    if (volunteer.break_until) now = _('On a break until %(time)s', { time: clock(volunteer.break_until) });
    else if (volunteer.available && volunteer.connected) now = 'Available';
    else if (volunteer.connected) now = _('Signed in, away');
    const cells = [
      volunteer.display_name,
      now,
      `${volunteer.chats} / ${volunteer.capacity}`,
      `${hours(volunteer.available_seconds_today)} / ${hours(volunteer.available_seconds_week)}`,
      `${volunteer.chats_today} / ${volunteer.chats_week}`,
      `${volunteer.hard_today} / ${volunteer.hard_week}`,
    ];
    for (const text of cells) {
      const cell = document.createElement('td');
      cell.textContent = text;
      row.append(cell);
    }
    if (volunteer.hard_today > 0 || volunteer.break_until) {
      row.classList.add('row-alert');
    }
    return row;
  });
  ui.volunteerRows.replaceChildren(...rows);
}

// Lists the volunteers who could take the open conversation: connected, available and
// with room. The relay checks the same again when the transfer arrives.
function renderTransferChoices(overview) {
  const entry = (overview.conversations || []).find((item) => item.conversation === panel.conversation);
  const previous = ui.transferSelect.value;
  const options = (overview.volunteers || [])
    .filter((volunteer) => volunteer.connected && volunteer.available && !volunteer.break_until)
    .filter((volunteer) => volunteer.chats < volunteer.capacity)
    .filter((volunteer) => !entry || volunteer.id !== entry.volunteer_id)
    .map((volunteer) => {
      const option = document.createElement('option');
      option.value = String(volunteer.id);
      option.textContent = `${volunteer.display_name} (${volunteer.chats} of ${volunteer.capacity})`;
      return option;
    });
  ui.transferSelect.replaceChildren(...options);
  if (options.some((option) => option.value === previous)) {
    ui.transferSelect.value = previous;
  }
  const usable = Boolean(entry && entry.status === 'active' && options.length > 0);
  ui.transferSelect.disabled = !usable;
  ui.transferButton.disabled = !usable;
}

// ---------------------------------------------------------------------------
// The open conversation

function openConversation(conversation) {
  if (panel.conversation !== null && panel.conversation !== conversation) {
    sendFrame({ type: 'unwatch', conversation: panel.conversation });
  }
  if (panel.conversation !== conversation) {
    panel.conversation = conversation;
    panel.seqs = new Set();
    panel.whispers = new Set();
    ui.panelLog.replaceChildren();
    setJoined(false);
  }
  ui.panelAlert.textContent = '';
  ui.panelHeading.textContent = _('Chat %(chat)s (read-only)', { chat: shortId(conversation) });
  ui.conversationPanel.hidden = false;
  sendFrame({ type: 'watch', conversation });
  if (state.overview) {
    renderOverview();
  }
  ui.panelHeading.focus();
}

function closePanel() {
  if (panel.conversation !== null) {
    sendFrame({ type: 'unwatch', conversation: panel.conversation });
  }
  panel.conversation = null;
  ui.conversationPanel.hidden = true;
  ui.panelLog.replaceChildren();
}

function handleWatching(frame) {
  if (frame.conversation !== panel.conversation) {
    return;
  }
  setJoined(frame.joined === true);
  const assignee = frame.volunteer ? `with ${frame.volunteer}` : 'without a volunteer';
  ui.panelStatus.textContent = `${frame.status}, ${assignee}`;
}

function setJoined(joined) {
  panel.joined = joined;
  ui.joinForm.hidden = !joined;
  ui.joinButton.hidden = joined;
  ui.leaveButton.hidden = !joined;
  ui.panelHeading.textContent = panel.conversation === null
    ? ''
    : joined
      ? _('Chat %(chat)s (joined)', { chat: shortId(panel.conversation) })
      : _('Chat %(chat)s (read-only)', { chat: shortId(panel.conversation) });
}

function renderMessage(frame) {
  if (!Number.isInteger(frame.seq) || panel.seqs.has(frame.seq)) {
    return;
  }
  panel.seqs.add(frame.seq);
  let label = 'Visitor';
  if (frame.sender === 'volunteer') {
    label = typeof frame.author === 'string' ? frame.author : 'Volunteer';
  }
  const element = buildEntry(frame.sender === 'visitor' ? 'message from-visitor' : 'message from-you', label, frame.body, frame.sent_at);
  element.dataset.seq = String(frame.seq);
  place(element, frame.seq, false);
}

function renderWhisper(frame) {
  if (panel.whispers.has(frame.id)) {
    return;
  }
  panel.whispers.add(frame.id);
  const element = buildEntry('message whisper', _('Whisper from %(author)s', { author: frame.author }), frame.body, frame.sent_at);
  element.dataset.afterSeq = String(frame.after_seq);
  place(element, frame.after_seq, true);
}

// Puts a message after every entry with a lower seq; a whisper after the message it
// followed and after earlier whispers.
function place(element, seq, isWhisper) {
  let before = null;
  for (const child of ui.panelLog.children) {
    const childSeq = child.dataset.seq !== undefined ? Number(child.dataset.seq) : Number(child.dataset.afterSeq);
    const childIsWhisper = child.dataset.seq === undefined;
    if (childSeq > seq || (!isWhisper && childIsWhisper && childSeq >= seq)) {
      before = child;
      break;
    }
  }
  ui.panelLog.insertBefore(element, before);
  ui.panelLog.scrollTop = ui.panelLog.scrollHeight;
}

function buildEntry(className, label, body, sentAt) {
  const element = document.createElement('article');
  element.className = className;
  const meta = document.createElement('p');
  meta.className = 'message-meta';
  const sender = document.createElement('span');
  sender.className = 'message-sender';
  sender.textContent = label;
  meta.append(sender, ` ${clock(sentAt)}`);
  const text = document.createElement('p');
  text.className = 'message-body';
  text.dir = 'auto';
  appendLinkedText(text, String(body ?? ''));
  element.append(meta, text);
  return element;
}

function sendWhisper() {
  const body = ui.whisperText.value.trim();
  if (body === '' || panel.conversation === null) {
    ui.panelAlert.textContent = _('Write a whisper before sending.');
    return;
  }
  if (sendFrame({ type: 'whisper', conversation: panel.conversation, body })) {
    ui.whisperText.value = '';
    ui.panelAlert.textContent = '';
  }
}

function sendToVisitor() {
  const body = ui.joinText.value.trim();
  if (body === '' || panel.conversation === null || !panel.joined) {
    ui.panelAlert.textContent = _('Write a message before sending.');
    return;
  }
  const frame = { type: 'supervisor_send', conversation: panel.conversation, client_id: clientId(), body };
  if (sendFrame(frame)) {
    ui.joinText.value = '';
    ui.panelAlert.textContent = '';
  }
}

function transferConversation() {
  const target = Number(ui.transferSelect.value);
  if (!Number.isInteger(target) || target < 1 || panel.conversation === null) {
    return;
  }
  const name = ui.transferSelect.selectedOptions[0]?.textContent ?? 'the volunteer';
  if (sendFrame({ type: 'transfer', conversation: panel.conversation, volunteer: target })) {
    announce(_('Transferring chat %(chat)s to %(name)s.', { chat: shortId(panel.conversation), name }));
  }
}

// ---------------------------------------------------------------------------
// Alerts and helpers

function announceAlert(frame) {
  announce(`${frame.volunteer} needs support in chat ${shortId(frame.conversation)}.`);
  playChime();
}

function toggleSound() {
  if (!state.audioContext) {
    const AudioContextClass = window.AudioContext || window.webkitAudioContext;
    if (!AudioContextClass) {
      showNotice(_('This browser cannot play sounds.'));
      return;
    }
    state.audioContext = new AudioContextClass();
  }
  state.soundOn = !state.soundOn;
  ui.soundToggle.textContent = state.soundOn ? _('Sound on') : _('Enable sound');
  ui.soundToggle.setAttribute('aria-pressed', String(state.soundOn));
  playChime();
}

// Plays the dashboard's chime one step higher, so an alert sounds unlike a new visitor.
function playChime() {
  const context = state.audioContext;
  if (!state.soundOn || !context) {
    return;
  }
  const start = context.currentTime + 0.02;
  for (const [frequency, offset] of [[880, 0], [1175, 0.15]]) {
    const oscillator = context.createOscillator();
    oscillator.frequency.value = frequency;
    const gain = context.createGain();
    gain.gain.setValueAtTime(0.0001, start + offset);
    gain.gain.exponentialRampToValueAtTime(0.12, start + offset + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + offset + 0.18);
    oscillator.connect(gain).connect(context.destination);
    oscillator.start(start + offset);
    oscillator.stop(start + offset + 0.2);
  }
}

function button(text, onClick) {
  const element = document.createElement('button');
  element.type = 'button';
  element.className = 'button-small';
  element.textContent = text;
  element.addEventListener('click', onClick);
  return element;
}

function setStatus(text, stateName) {
  ui.connectionStatus.textContent = text;
  ui.connectionStatus.dataset.state = stateName;
}

function showNotice(text) {
  ui.notice.textContent = text;
}

function announce(text) {
  ui.announcer.textContent = text;
}

function shortId(conversation) {
  return typeof conversation === 'string' ? conversation.slice(0, 6) : '–';
}

function clock(value) {
  const date = typeof value === 'string' ? new Date(value) : null;
  if (!date || Number.isNaN(date.getTime())) {
    return '--:--';
  }
  return `${String(date.getHours()).padStart(2, '0')}:${String(date.getMinutes()).padStart(2, '0')}`;
}

function minutesText(since) {
  const date = typeof since === 'string' ? new Date(since) : null;
  if (!date || Number.isNaN(date.getTime())) {
    return '–';
  }
  const minutes = Math.max(0, Math.floor((Date.now() - date.getTime()) / 60_000));
  return minutes < 1 ? 'under 1 min' : `${minutes} min`;
}

function hours(seconds) {
  return (Number(seconds) / 3600).toFixed(1);
}

function clientId() {
  const bytes = crypto.getRandomValues(new Uint8Array(22));
  let id = '';
  for (const byte of bytes) {
    id += CLIENT_ID_ALPHABET[byte & 63];
  }
  return id;
}

main();
