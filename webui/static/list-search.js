// Search boxes over long lists of toggles and chips (54 apps, 20 kinds of sites): typing hides
// the rows that do not match. Without JavaScript every row stays shown.
(function () {
  "use strict";
  var boxes = document.querySelectorAll("input.list-search[data-list]");
  Array.prototype.forEach.call(boxes, function (box) {
    var list = document.getElementById(box.getAttribute("data-list"));
    if (!list) { return; }
    var none = list.parentNode.querySelector(".no-match");
    box.addEventListener("input", function () {
      var words = box.value.trim().toLowerCase();
      var shown = 0;
      Array.prototype.forEach.call(list.children, function (row) {
        var text = (row.getAttribute("data-search") || row.textContent).toLowerCase();
        var match = !words || text.indexOf(words) !== -1;
        row.hidden = !match;
        if (match) { shown += 1; }
      });
      if (none) { none.hidden = shown > 0; }
    });
    // Enter in a search box must not submit the whole form.
    box.addEventListener("keydown", function (event) {
      if (event.key === "Enter") { event.preventDefault(); }
    });
  });
}());
