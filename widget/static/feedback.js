// The post-chat question on the chat page. Without scripts the form posts and the
// relay renders the page again. With scripts this module posts the same fields in the
// background, so the chat page stays as it is. chat.js shows the form when a chat
// ends and fills in its token.

import { readJsonBlock, translator } from "/static/text.js";

// Texts in the page's language, from the JSON block #feedback-text that the relay fills
// from this file's _() calls.
const _ = translator(readJsonBlock("feedback-text"));

const form = document.getElementById("feedback-form");
const thanks = document.getElementById("feedback-thanks");
const errorText = document.getElementById("feedback-error");

const ERROR_TEXTS = {
  400: _("Choose an answer to at least one question."),
};
const GENERIC_ERROR_TEXT = _("The answers could not be sent. Please try again.");

async function submitFeedback(event) {
  event.preventDefault();
  const body = new URLSearchParams(new FormData(form));
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  errorText.hidden = true;
  let status = 0;
  try {
    const response = await fetch(form.action, { method: "POST", body, credentials: "same-origin" });
    status = response.status;
  } catch (error) {
    console.error("Sending the post-chat answers failed:", error);
  }
  button.disabled = false;
  // 409: this chat was answered before, from another tab or without scripts.
  if (status === 200 || status === 409) {
    form.dataset.answered = body.get("chat_token") ?? "";
    form.hidden = true;
    thanks.hidden = false;
    thanks.focus();
    return;
  }
  errorText.textContent = ERROR_TEXTS[status] ?? GENERIC_ERROR_TEXT;
  errorText.hidden = false;
}

if (form && thanks && errorText) {
  thanks.tabIndex = -1;
  form.addEventListener("submit", submitFeedback);
}
