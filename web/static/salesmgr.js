// salesmgr web: the little the pages do in the browser. Everything works without it (forms
// post and pages reload); with it, a card can be dragged to another stage, the board and the
// list update in place (htmx), and deleting asks first.
document.documentElement.classList.add("js");

// Drag a card onto a column: the card's own "move" form posts the new stage.
let dragged = null;
document.addEventListener("dragstart", (event) => {
  const card = event.target.closest && event.target.closest("[data-card]");
  if (!card) return;
  dragged = card;
  card.classList.add("dragging");
  event.dataTransfer.effectAllowed = "move";
  event.dataTransfer.setData("text/plain", card.dataset.card);
});
document.addEventListener("dragend", () => {
  if (dragged) dragged.classList.remove("dragging");
  document.querySelectorAll(".column.drop").forEach((c) => c.classList.remove("drop"));
  dragged = null;
});
document.addEventListener("dragover", (event) => {
  const column = event.target.closest && event.target.closest(".column[data-stage]");
  if (!column || !dragged) return;
  event.preventDefault();
  document.querySelectorAll(".column.drop").forEach((c) => c !== column && c.classList.remove("drop"));
  column.classList.add("drop");
});
document.addEventListener("drop", (event) => {
  const column = event.target.closest && event.target.closest(".column[data-stage]");
  if (!column || !dragged) return;
  event.preventDefault();
  const form = dragged.querySelector("form.move");
  const select = form.querySelector("select");
  if (select.value === column.dataset.stage) return;
  select.value = column.dataset.stage;
  if (window.htmx) {
    window.htmx.trigger(form, "change");
  } else {
    form.submit();
  }
});

// Without htmx a changed stage still moves the card in one action.
document.addEventListener("change", (event) => {
  const form = event.target.closest && event.target.closest("form.move");
  if (form && !window.htmx) form.submit();
});

document.addEventListener("submit", (event) => {
  const question = event.target.dataset && event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});

// Words typed into a search box before the scripts had run raised no event htmx could see,
// and htmx takes the box's value when it starts as the one not to search for again; once
// htmx is ready, such a box announces a change (as leaving it would), so an early typist's
// search is not silently dropped.
document.addEventListener("DOMContentLoaded", () => {
  if (!window.htmx) return;
  document.querySelectorAll("input[type=search]").forEach((box) => {
    if (box.value !== box.defaultValue) box.dispatchEvent(new Event("change", { bubbles: true }));
  });
});
