// Parts of a volunteer's chat panel for supervision and wellbeing: whispers, "Need
// support", marking an ended chat as hard, and the break banner. dashboard.js wires them
// to its chats and socket. Text reaches the DOM only through textContent.

import { appendLinkedText, readJsonBlock, translator } from '/static/text.js';

// Texts in the page's language, from the JSON block #support-text that the relay fills
// from this file's _() calls.
const _ = translator(readJsonBlock('support-text'));

export const SUPPORT_TEXT = {
  requested: _('Supervisors have been alerted. Keep going; one will be with you shortly.'),
  nobody: _(
    'No supervisor is online right now. The request stays open and reaches the next one who signs in. If you need help at once, call your coordinator.',
  ),
  acknowledged: (name) => _('%(name)s saw your request and is with you.', { name }),
};

// Returns the "Need support" button and the status line under it.
export function buildSupportControls(onRequest) {
  const element = document.createElement('div');
  element.className = 'support-controls';

  const button = document.createElement('button');
  button.type = 'button';
  button.textContent = _('Need support');
  button.title = _('Alert the supervisors on duty about this chat');
  button.addEventListener('click', onRequest);

  const status = document.createElement('p');
  status.className = 'support-status';
  status.setAttribute('role', 'status');

  element.append(button, status);
  return { element, button, status };
}

// Returns the control in an ended chat's notice that marks the chat as hard.
export function buildHardChatControl(onMark) {
  const element = document.createElement('div');
  element.className = 'hard-chat';

  const button = document.createElement('button');
  button.type = 'button';
  button.textContent = _('This chat was hard — take a break');
  button.addEventListener('click', onMark);

  const note = document.createElement('p');
  note.className = 'hint';
  note.textContent = _('Supervisors are told, and no new chats are offered to you during the break.');

  element.append(button, note);
  return { element, button };
}

// Returns the log entry of a whisper: set apart, and labelled as unseen by the visitor.
export function buildWhisperElement(frame, timeElement) {
  const element = document.createElement('article');
  element.className = 'message whisper';
  element.dataset.afterSeq = String(Number.isInteger(frame.after_seq) ? frame.after_seq : 0);

  const meta = document.createElement('p');
  meta.className = 'message-meta';
  const sender = document.createElement('span');
  sender.className = 'message-sender';
  const author = typeof frame.author === 'string' ? frame.author : _('A supervisor');
  sender.textContent = _('Whisper from %(author)s — the visitor does not see this', { author });
  meta.append(sender, ' ', timeElement);

  const text = document.createElement('p');
  text.className = 'message-body';
  text.dir = 'auto';
  appendLinkedText(text, String(frame.body ?? ''));

  element.append(meta, text);
  return element;
}

// Puts a whisper after the message it followed, after earlier whispers, and before any
// reply still waiting for its ack.
export function placeWhisper(log, element, afterSeq) {
  let before = null;
  for (const child of log.children) {
    if (child.classList.contains('pending') || Number(child.dataset.seq) > afterSeq) {
      before = child;
      break;
    }
  }
  log.insertBefore(element, before);
}
