// entra-remediator console: the only script. Pages work without it; it adds
// "select all on this page" to tables of identities.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("input[data-select-all]").forEach(function (all) {
    all.addEventListener("change", function () {
      var form = all.form;
      if (!form) { return; }
      form.querySelectorAll("input[type=checkbox][name=identity]").forEach(function (box) {
        box.checked = all.checked;
      });
    });
  });
});
