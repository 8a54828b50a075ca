// Text helpers shared by the visitor's chat page and the volunteer dashboard. Both
// render text written by other people, so it only enters the DOM as text nodes.

// Only http, https and mailto addresses become links; everything else, including
// javascript: and data: addresses, stays plain text. Trailing punctuation stays text.
// Links open in a new tab without a referrer or a handle back to this page.
const LINK_PATTERN = /\b(?:https?:\/\/|mailto:)[^\s<>"']+/gi;
const LINK_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);

// Appends `text` to `element` as text nodes, with each address as a link.
export function appendLinkedText(element, text) {
  let position = 0;
  for (const match of text.matchAll(LINK_PATTERN)) {
    const address = match[0].replace(/[.,;:!?)\]]+$/, "");
    let url;
    try {
      url = new URL(address);
    } catch {
      continue;
    }
    if (!LINK_PROTOCOLS.has(url.protocol)) continue;
    element.append(text.slice(position, match.index));
    const link = document.createElement("a");
    link.href = url.href;
    link.textContent = address;
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    element.append(link);
    position = match.index + address.length;
  }
  element.append(text.slice(position));
}

// Returns the value of the page's JSON data block with this id (a
// <script type="application/json">, which the CSP allows because it never runs),
// or an empty object when the block is missing or invalid.
export function readJsonBlock(id) {
  try {
    return JSON.parse(document.getElementById(id)?.textContent || "{}");
  } catch (error) {
    console.error(`The page's #${id} block is not valid JSON:`, error);
    return {};
  }
}

// Returns a gettext-like function over `texts`, a table from English message ids to
// their translations. It returns the translation, or the English text when there is
// none, with each %(name)s replaced by values[name].
export function translator(texts) {
  return (text, values = {}) => {
    const translated = texts[text] || text;
    return translated.replace(/%\((\w+)\)s/g, (placeholder, name) => (name in values ? String(values[name]) : placeholder));
  };
}
