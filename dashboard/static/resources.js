// The "Resources and saved replies" box under each chat panel. The volunteer searches
// the hub's directory and pages and the saved replies. The relay runs the search, so the
// page contains no copy of the content. A hub result is sent as a resource card, which the
// relay builds from its id. A saved reply only fills the reply box, so the volunteer
// reads and can change it before sending.

import { readJsonBlock, translator } from '/static/text.js';

// Texts in the page's language, from the JSON block #resources-text that the relay fills
// from this file's _() calls.
const _ = translator(readJsonBlock('resources-text'));

const SEARCH_PATH = '/dashboard/resources/search';
const SEARCH_DELAY_MS = 300;
const LANGUAGES = [
  ['en', 'English'],
  ['mt', 'Malti'],
];

let elementCount = 0;

// Returns the box's element. `onCard(id, language)` sends a card; `onReply(text)`
// puts a saved reply's text in the reply box.
export function buildResourceSearch({ onCard, onReply }) {
  elementCount += 1;
  const prefix = `resource-search-${elementCount}`;
  const element = document.createElement('details');
  element.className = 'resource-search';
  const summary = document.createElement('summary');
  summary.textContent = _('Resources and saved replies');

  const form = document.createElement('form');
  form.setAttribute('role', 'search');
  form.noValidate = true;
  const label = document.createElement('label');
  label.htmlFor = `${prefix}-query`;
  label.textContent = _('Search services, pages and saved replies');
  const input = document.createElement('input');
  input.type = 'search';
  input.id = `${prefix}-query`;
  input.maxLength = 100;
  input.autocomplete = 'off';
  const languageLabel = document.createElement('label');
  languageLabel.htmlFor = `${prefix}-language`;
  languageLabel.textContent = _('Language');
  const language = document.createElement('select');
  language.id = `${prefix}-language`;
  for (const [code, name] of LANGUAGES) {
    language.append(new Option(name, code));
  }
  const button = document.createElement('button');
  button.type = 'submit';
  button.textContent = _('Search');
  form.append(label, input, languageLabel, language, button);

  const status = document.createElement('p');
  status.className = 'resource-status';
  status.setAttribute('role', 'status');
  const results = document.createElement('ul');
  results.className = 'resource-results';
  element.append(summary, form, status, results);

  const box = { input, language, status, results, onCard, onReply, timer: null, request: 0 };
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    runSearch(box);
  });
  input.addEventListener('input', () => {
    clearTimeout(box.timer);
    box.timer = setTimeout(() => runSearch(box), SEARCH_DELAY_MS);
  });
  language.addEventListener('change', () => runSearch(box));
  element.addEventListener('toggle', () => {
    if (element.open && results.childElementCount === 0) runSearch(box);
  });
  return element;
}

async function runSearch(box) {
  clearTimeout(box.timer);
  box.request += 1;
  const request = box.request;
  const params = new URLSearchParams({ q: box.input.value.trim(), lang: box.language.value });
  let data;
  try {
    const response = await fetch(`${SEARCH_PATH}?${params}`, {
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { accept: 'application/json' },
    });
    if (!response.ok) throw new Error(`search returned ${response.status}`);
    data = await response.json();
  } catch (error) {
    console.warn('Resource search failed', error);
    if (request === box.request) box.status.textContent = _('The search failed. Try again.');
    return;
  }
  // A late response to an older search must not replace a newer one.
  if (request !== box.request) return;
  showResults(box, data);
}

function showResults(box, data) {
  const resources = Array.isArray(data.resources) ? data.resources : [];
  const replies = Array.isArray(data.replies) ? data.replies : [];
  const language = box.language.value;
  const items = [];
  for (const result of resources) {
    if (typeof result.id !== 'string' || typeof result.title !== 'string') continue;
    const kind = result.kind === 'page' ? _('Page') : _('Service');
    items.push(
      buildResult(kind, result.title, String(result.summary ?? ''), _('Send card'), () =>
        box.onCard(result.id, language),
      ),
    );
  }
  for (const reply of replies) {
    if (typeof reply.title !== 'string' || typeof reply.body !== 'string') continue;
    items.push(buildResult(_('Saved reply'), reply.title, reply.body, _('Insert'), () => box.onReply(reply.body)));
  }
  box.results.replaceChildren(...items);
  box.status.textContent =
    items.length === 0
      ? _('Nothing found.')
      : items.length === 1
        ? _('1 result')
        : _('%(count)s results', { count: items.length });
}

function buildResult(kind, title, text, action, onChoose) {
  const item = document.createElement('li');
  item.className = 'resource-result';
  const heading = document.createElement('p');
  heading.className = 'resource-result-title';
  const badge = document.createElement('span');
  badge.className = 'badge';
  badge.textContent = kind;
  heading.append(badge, ' ', title);
  const body = document.createElement('p');
  body.className = 'resource-result-text';
  body.textContent = text;
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'button-small';
  button.textContent = action;
  button.setAttribute('aria-label', `${action}: ${title}`);
  button.addEventListener('click', onChoose);
  item.append(heading, body, button);
  return item;
}
