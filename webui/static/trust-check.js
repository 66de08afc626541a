// The trust check (/certificate/check): says in words whether the picture from the filter's
// HTTPS port loaded, i.e. whether this device trusts the house's certificate authority.
// Without JavaScript the picture (or its "Not trusted" text) says the same.
(function () {
  "use strict";
  var picture = document.getElementById("trust-probe");
  var result = document.getElementById("trust-result");
  if (!picture || !result) { return; }
  function show(trusted) {
    result.textContent = trusted ? result.getAttribute("data-yes") : result.getAttribute("data-no");
    result.className = trusted ? "big ok" : "big blocked";
    result.hidden = false;
  }
  if (picture.complete) {
    show(picture.naturalWidth > 0);
  } else {
    picture.addEventListener("load", function () { show(true); });
    picture.addEventListener("error", function () { show(false); });
  }
}());
