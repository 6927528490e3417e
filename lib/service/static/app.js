// The search page: upload (pick or drop) a photo, or click a match to search by it.
// Talks to the service's JSON API; text from the server is shown with textContent only.
"use strict";

const $ = (id) => document.getElementById(id);
let queryUrl = null;        // object URL of the uploaded photo, released on the next one

function imageUrl(name) {
  return "/images/" + name.split("/").map(encodeURIComponent).join("/");
}

function count() {
  const n = $("n");
  const value = Number.parseInt(n.value, 10);
  return Number.isFinite(value) && value > 0 ? value : Number.parseInt(n.min, 10) || 1;
}

function setBusy(text) {
  document.body.dataset.state = text ? "busy" : "ready";
  $("status").textContent = text || "";
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    throw new Error(`${response.status} ${response.statusText}`);
  }
  if (!response.ok) {
    throw new Error(body && body.error ? body.error : `${response.status} ${response.statusText}`);
  }
  return body;
}

function render(answer, querySrc) {
  $("query-image").src = querySrc;
  $("query-name").textContent = answer.query;
  $("version").textContent = answer.version;
  $("status").textContent =
    `${answer.results.length} most similar of ${answer.images} images to ${answer.query}`;
  const list = $("matches");
  list.replaceChildren();
  const template = $("match-template");
  for (const match of answer.results) {
    const item = template.content.firstElementChild.cloneNode(true);
    const button = item.querySelector("button");
    button.dataset.name = match.name;
    item.querySelector("img").src = imageUrl(match.name);
    item.querySelector("img").alt = match.name;
    item.querySelector(".rank").textContent = `#${match.rank}`;
    item.querySelector(".score").textContent = match.score.toFixed(4);
    item.querySelector(".name").textContent = match.name;
    button.addEventListener("click", () => searchName(match.name));
    list.appendChild(item);
  }
  $("results").hidden = false;
}

async function run(label, request, querySrc) {
  showError("");
  setBusy(`searching ${label}\u2026`);
  try {
    const answer = await request();
    render(answer, querySrc);
    document.body.dataset.state = "ready";
  } catch (err) {
    setBusy("");
    showError(err.message);
  }
}

function searchFile(file) {
  if (!file) {
    return;
  }
  if (queryUrl) {
    URL.revokeObjectURL(queryUrl);
  }
  queryUrl = URL.createObjectURL(file);
  const form = new FormData();
  form.append("image", file, file.name);
  $("file").value = "";        // choosing the same file again searches again
  run(file.name, () => api(`/search?n=${count()}`, { method: "POST", body: form }), queryUrl);
}

function searchName(name) {
  const query = new URLSearchParams({ name, n: String(count()) });
  run(name, () => api(`/search?${query}`), imageUrl(name));
}

function setUp() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => searchFile(event.target.files[0]));
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  // A photo dropped on the zone, or anywhere on the page, is searched (not opened).
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    searchFile(event.dataTransfer.files[0]);
  });
  api("/version").then((info) => {
    $("version").textContent = info.version;
    $("n").value = info.default_n;
    $("n").max = info.max_n;
    setBusy("");
  }).catch((err) => showError(`the service does not answer: ${err.message}`));
}

setUp();
