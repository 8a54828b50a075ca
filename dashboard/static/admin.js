// Admin pages: "Copy" buttons for snippets and invitation links. Without
// scripts the buttons stay hidden and the text is selectable by hand. The
// status texts come translated from the page's data attributes.

function copyTarget(button) {
  const source = document.getElementById(button.dataset.copy);
  const status = button.parentElement.querySelector(".copy-status");
  if (!source) return;
  navigator.clipboard.writeText(source.textContent).then(
    () => {
      if (status) status.textContent = status.dataset.copied;
    },
    () => {
      if (status) status.textContent = status.dataset.failed;
    },
  );
}

function wireCopyButtons() {
  if (!navigator.clipboard) return;
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.hidden = false;
    button.addEventListener("click", () => copyTarget(button));
  }
}

wireCopyButtons();
