// Resource cards: a directory entry or hub page that a volunteer sent into a chat.
// The visitor's chat page and the volunteer dashboard both show them. The relay builds
// each card from its own content, but the card still enters the DOM only as text
// nodes and links whose addresses are checked here.

const PHONE_PATTERN = /^\+?[0-9 ]{1,20}$/;
// English labels of the details. Pages in other languages pass their own translated
// `labels` to buildResourceCard, from their script's _() calls.
const LABELS = { phone: "Phone", email: "E-mail", hours: "Hours", website: "Website", link: "Read more" };

// Returns true when `card` has the string fields a card frame carries.
export function isResourceCard(card) {
  if (card === null || typeof card !== "object") return false;
  return ["name", "purpose", "phone", "email", "hours", "website", "link"].every(
    (field) => typeof card[field] === "string",
  );
}

// Builds the element that shows `card`. A `site` key is added to a hub page's link, so
// that the page's Quick exit leaves for that partner's neutral page.
export function buildResourceCard(card, { site = "", labels = LABELS } = {}) {
  const element = document.createElement("div");
  element.className = "resource-card";
  const name = document.createElement("p");
  name.className = "resource-name";
  name.textContent = card.name;
  const purpose = document.createElement("p");
  purpose.className = "resource-purpose";
  purpose.textContent = card.purpose;
  element.append(name, purpose);

  const details = document.createElement("dl");
  details.className = "resource-details";
  if (PHONE_PATTERN.test(card.phone)) {
    addDetail(details, labels.phone, link(`tel:${card.phone.replaceAll(" ", "")}`, card.phone));
  }
  if (card.email.includes("@") && !/[\s<>"]/.test(card.email)) {
    addDetail(details, labels.email, link(`mailto:${card.email}`, card.email));
  }
  if (card.hours) addDetail(details, labels.hours, document.createTextNode(card.hours));
  if (card.website.startsWith("https://")) {
    addDetail(details, labels.website, link(card.website, card.website, true));
  }
  if (card.link.startsWith("/info/")) {
    const href = site ? `${card.link}&site=${encodeURIComponent(site)}` : card.link;
    addDetail(details, labels.link, link(href, card.name, true));
  }
  if (details.childElementCount > 0) element.append(details);
  return element;
}

function addDetail(list, label, value) {
  const term = document.createElement("dt");
  term.textContent = label;
  const description = document.createElement("dd");
  description.append(value);
  list.append(term, description);
}

// A link that opens in a new tab, without a referrer or a handle back to the chat.
function link(href, text, newTab = false) {
  const anchor = document.createElement("a");
  anchor.href = href;
  anchor.textContent = text;
  if (newTab) {
    anchor.target = "_blank";
    anchor.rel = "noopener noreferrer";
  }
  return anchor;
}
