/* Live preview of a communication's HTML body: the sandboxed iframe beside the textarea follows what is typed.
   Plain script, no dependencies; the iframe has sandbox="" so the email's own scripts never run. */
(function () {
  "use strict";

  function attach(textarea) {
    var editor = textarea.closest(".communication-editor");
    var frame = editor && editor.querySelector("iframe");
    if (!frame) {
      return;
    }
    var pending = null;
    textarea.addEventListener("input", function () {
      if (pending) {
        window.clearTimeout(pending);
      }
      pending = window.setTimeout(function () {
        frame.srcdoc = textarea.value;
      }, 200);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("textarea[data-live-preview]").forEach(attach);
  });
})();
