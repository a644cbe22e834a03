// The web UI's only script: copy buttons for pull commands. Everything works without it.
"use strict";
document.addEventListener("click", function (event) {
  var button = event.target.closest("button.copy");
  if (!button) return;
  var text = button.getAttribute("data-copy") || "";
  var done = function () {
    button.textContent = "Copied";
    setTimeout(function () { button.textContent = "Copy"; }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, function () {});
  } else {
    var input = button.parentElement.querySelector("input.cmd");
    if (input) { input.focus(); input.select(); document.execCommand("copy"); done(); }
  }
});
