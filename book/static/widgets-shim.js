// The book's widget snapshots, offline and without console errors (loaded before MathJax and the
// widget manager; see book/_ext/book_assets.py).
// 1. @jupyter-widgets/html-manager typesets every widget label with MathJax 2's
//    `MathJax.Hub.Queue(["Typeset", MathJax.Hub, el])`. The book loads MathJax 3, which has no
//    `Hub`, so each labelled widget threw "Cannot read properties of undefined (reading 'Queue')".
//    Whatever object ends up as window.MathJax (the config object, then MathJax 3 itself) gets a
//    `Hub.Queue` that forwards to MathJax 3's typesetPromise.
// 2. The widget CSS loads its icon fonts from the folder of the AMD module
//    "@jupyter-widgets/html-manager/dist/…", which RequireJS resolves relative to each page (404):
//    a RequireJS config (a global `require` object set before require.js loads) maps that module
//    path to the vendored copies in widget-assets/.
(function () {
  "use strict";
  function withHub(mj) {
    if (mj && typeof mj === "object" && !mj.Hub) {
      mj.Hub = {
        Queue: function (cmd) {
          var el = cmd && cmd[2];
          var m = window.MathJax;
          if (el && m && typeof m.typesetPromise === "function") {
            m.typesetPromise([el]).catch(function () {});
          }
        }
      };
    }
    return mj;
  }
  var current = withHub(window.MathJax);
  Object.defineProperty(window, "MathJax", {
    configurable: true,
    get: function () { return current; },
    set: function (value) { current = withHub(value); }
  });
  var here = document.currentScript && document.currentScript.src;
  if (here && typeof window.require === "undefined") {
    // every widget bundle ("@jupyter-widgets/controls", ".../html-manager/dist/...") carries the
    // same fonts relative to its own module path: map them all to the one vendored folder
    var assets = new URL("widget-assets", here).href;
    window.require = {
      paths: { "@jupyter-widgets/html-manager/dist": assets, "@jupyter-widgets": assets }
    };
  }
})();
