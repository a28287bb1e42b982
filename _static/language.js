// The same page in the other language: the English book at the site root, the Chinese one
// under zh/ (book/translate.py builds it from the same notebooks). Adds one link to the header.
document.addEventListener("DOMContentLoaded", function () {
  var base = document.documentElement.dataset.content_root;
  if (base === undefined && window.DOCUMENTATION_OPTIONS) base = DOCUMENTATION_OPTIONS.URL_ROOT;
  var root = new URL(base || "./", window.location.href);
  var page = window.location.href.slice(root.href.length);
  var chinese = document.documentElement.lang.toLowerCase().startsWith("zh");
  var link = document.createElement("a");
  link.href = new URL((chinese ? "../" : "zh/") + page, root).href;
  link.textContent = chinese ? "English" : "中文";
  link.className = "btn btn-sm language-switch";
  link.setAttribute("hreflang", chinese ? "en" : "zh");
  var bar = document.querySelector(".article-header-buttons") || document.querySelector("article");
  if (bar) bar.prepend(link);
});
