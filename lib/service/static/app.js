// The search page: upload (pick or drop) a photo, or click a match to search by it.
// Talks to the service's JSON API; text from the server is shown with textContent only.
// When the service was started with a token, the page asks for it once, keeps it in
// sessionStorage (this tab only) and sends it as "Authorization: Bearer"; thumbnails
// are then fetched with it too (an <img src> cannot send a header).
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "image-search-token";
let queryUrl = null;        // object URL of the uploaded photo, released on the next one
let thumbUrls = [];         // object URLs of fetched thumbnails, released on the next answer

// Every character of a name may occur (spaces, #, ?, %, newlines, any script): each
// path segment is percent-encoded, "/" stays the separator the server expects.
function imageUrl(name) {
  return "/images/" + name.split("/").map(encodeURIComponent).join("/");
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function withToken(options) {
  const given = token();
  if (!given) {
    return options || {};
  }
  const headers = new Headers((options && options.headers) || {});
  headers.set("Authorization", `Bearer ${given}`);
  return { ...(options || {}), headers };
}

function askForToken(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  $("token-form").hidden = false;
  $("token-message").textContent = message;
  $("token").focus();
}

async function showImage(img, name) {
  if (!token()) {
    img.src = imageUrl(name);
    return;
  }
  try {
    const response = await fetch(imageUrl(name), withToken());
    if (response.status === 401) {
      askForToken("the token was refused: enter it again");
      return;
    }
    if (response.ok) {
      const url = URL.createObjectURL(await response.blob());
      thumbUrls.push(url);
      img.src = url;
    }
  } catch (err) {
    img.alt = `${name} (${err.message})`;      // a missing thumbnail is not an error
  }
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
  const response = await fetch(url, withToken(options));
  if (response.status === 401) {
    askForToken(token() ? "the token was refused: enter it again"
                        : "this service needs its token");
    throw new Error("the service needs its token: enter it above");
  }
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

function render(answer, showQuery) {
  for (const url of thumbUrls) {
    URL.revokeObjectURL(url);
  }
  thumbUrls = [];
  showQuery($("query-image"));
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
    showImage(item.querySelector("img"), match.name);
    item.querySelector("img").alt = match.name;
    item.querySelector(".rank").textContent = `#${match.rank}`;
    item.querySelector(".score").textContent = match.score.toFixed(4);
    item.querySelector(".name").textContent = match.name;
    button.addEventListener("click", () => searchName(match.name));
    list.appendChild(item);
  }
  $("results").hidden = false;
}

async function run(label, request, showQuery) {
  showError("");
  setBusy(`searching ${label}\u2026`);
  try {
    const answer = await request();
    render(answer, showQuery);
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
  const src = queryUrl;
  run(file.name, () => api(`/search?n=${count()}`, { method: "POST", body: form }),
      (img) => { img.src = src; });
}

function searchName(name) {
  const query = new URLSearchParams({ name, n: String(count()) });
  run(name, () => api(`/search?${query}`), (img) => showImage(img, name));
}

function connect() {
  api("/version").then((info) => {
    $("version").textContent = info.version;
    $("n").value = info.default_n;
    $("n").max = info.max_n;
    showError("");
    setBusy("");
  }).catch((err) => showError(`the service does not answer: ${err.message}`));
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
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const given = $("token").value.trim();
    if (given) {
      sessionStorage.setItem(TOKEN_KEY, given);
      $("token").value = "";
      $("token-form").hidden = true;
      connect();
    }
  });
  connect();
}

setUp();
