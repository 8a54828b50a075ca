/* Embed loader: turns the <a data-vso-site> link into a button with its text and an
 * iframe panel, styled by !important CSSOM styles in a shadow root, which host CSS and
 * a strict host CSP cannot override. Keep it under 2 KB gzipped. */
(() => {
  "use strict";

  const MARK = "data-vso-ready"; // on processed links, so a second copy skips them
  const TAG = "vso-chat-widget";
  const BUTTON_STYLE = "cursor:pointer;color:#fff;background:#1d5b79;font:600 16px/1.25 system-ui,sans-serif;";

  const setStyles = (el, declarations) => {
    for (const declaration of declarations.split(";")) {
      const colon = declaration.indexOf(":");
      if (colon > 0) el.style.setProperty(declaration.slice(0, colon), declaration.slice(colon + 1), "important");
    }
    return el;
  };

  // "all:initial" keeps out browser defaults and styles inherited from the host page.
  const create = (tag, declarations, parent) => {
    const el = setStyles(document.createElement(tag), "all:initial;" + declarations);
    if (parent) parent.append(el);
    return el;
  };

  const createButton = (text, declarations, parent) => {
    const button = create("button", BUTTON_STYLE + declarations, parent);
    button.type = "button";
    button.textContent = text;
    // Inline styles cannot use :focus, so focus events switch the ring.
    button.addEventListener("focus", () => setStyles(button, "outline:3px solid #f0b429;outline-offset:2px"));
    button.addEventListener("blur", () => setStyles(button, "outline:none"));
    return button;
  };

  const build = (chatUrl, label, closeLabel) => {
    const host = create(TAG, "display:block;position:fixed;z-index:2147483647");
    const root = host.attachShadow({ mode: "open" });
    const launcher = createButton(label, "display:block;position:fixed;right:16px;bottom:16px;padding:12px 20px;border:2px solid #fff;border-radius:999px;box-shadow:0 2px 10px rgba(0,0,0,.3)", root);
    const narrow = matchMedia("(max-width:599.98px)");
    let panel, frame;

    const layOut = () => {
      if (panel) setStyles(panel, narrow.matches
        ? "inset:0;width:auto;height:auto;border-radius:0"
        : "inset:auto 16px 16px auto;width:380px;height:min(600px,100vh - 32px);border-radius:12px");
    };

    launcher.addEventListener("click", () => {
      if (!panel) {
        panel = create("div", "box-sizing:border-box;position:fixed;display:flex;flex-direction:column;overflow:hidden;background:#fff;border:1px solid #9fb1bc;box-shadow:0 4px 24px rgba(0,0,0,.3)", root);
        panel.setAttribute("role", "dialog");
        panel.setAttribute("aria-label", label);
        const bar = create("div", "display:flex;justify-content:flex-end;padding:4px;background:#1d5b79", panel);
        const closeButton = createButton("\u00d7", "padding:0 12px;font-size:28px;border:2px solid transparent;border-radius:6px", bar);
        closeButton.setAttribute("aria-label", closeLabel);
        // Closing only hides the panel, so the chat in the iframe keeps running.
        closeButton.addEventListener("click", () => {
          setStyles(panel, "display:none");
          setStyles(launcher, "display:block");
          launcher.focus();
        });
        // Attached last, so the iframe loads nothing before the chat URL.
        frame = create("iframe", "display:block;flex:1 1 auto;width:100%;border:0;background:#fff");
        frame.title = label;
        frame.referrerPolicy = "no-referrer";
        frame.src = chatUrl;
        panel.append(frame);
        layOut();
      }
      setStyles(panel, "display:flex");
      setStyles(launcher, "display:none");
      frame.focus();
    });
    narrow.addEventListener("change", layOut);
    // Quick exit in a relay page leaves this page too.
    addEventListener("message", ({ origin, data }) => {
      if (origin === new URL(chatUrl).origin && data?.type === "vso-exit" && /^https?:/.test(data.url)) {
        host.remove();
        location.replace(data.url);
      }
    });
    // Not body: a transform on body would trap the fixed panel inside it.
    document.documentElement.append(host);
  };

  const setUp = () => {
    let chatUrl;
    for (const link of document.querySelectorAll(`a[data-vso-site]:not([${MARK}])`)) {
      link.setAttribute(MARK, "");
      const href = link.getAttribute("href");
      let url;
      try {
        url = new URL(href, location.href);
      } catch {
        continue;
      }
      // Only http(s) URLs are framed. Links to a second chat URL stay as they are.
      if (!href || !/^https?:$/.test(url.protocol)) continue;
      if (!chatUrl) {
        if (document.querySelector(TAG)) return;
        build((chatUrl = url.href), link.textContent, link.dataset.vsoClose || "Close");
      }
      if (url.href === chatUrl) setStyles(link, "display:none");
    }
  };

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setUp);
  else setUp();
})();
