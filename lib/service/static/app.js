// The search page: upload (pick or drop) a photo, or ask for more like a result; narrow
// the search to a folder, set a minimum score, page through the results; and the
// near-duplicate groups of the version served (the Duplicates view).
// Talks to the service's JSON API; text from the server is shown with textContent only.
// When the service was started with a token, the page asks for it once, keeps it in
// sessionStorage (this tab only) and sends it as "Authorization: Bearer"; thumbnails
// are then fetched with it too (an <img src> cannot send a header).
// A link /?name=NAME (with folder, min_score, offset) opens a search by that name.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "image-search-token";
let queryUrl = null;        // object URL of the uploaded photo, released on the next one
let thumbUrls = [];         // object URLs of fetched thumbnails, released on the next answer
let current = null;         // the query shown: { label, request(params), showQuery(img) }
let offset = 0;             // results skipped before the page shown
let ticket = 0;             // the latest request: older answers are not shown

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

function releaseThumbnails() {
  for (const url of thumbUrls) {
    URL.revokeObjectURL(url);
  }
  thumbUrls = [];
}

function count() {
  const n = $("n");
  const value = Number.parseInt(n.value, 10);
  return Number.isFinite(value) && value > 0 ? value : Number.parseInt(n.min, 10) || 1;
}

// n, folder, min_score and offset as the API takes them (empty controls left out).
function controls(at) {
  const params = new URLSearchParams({ n: String(count()) });
  const folder = $("folder").value.trim();
  if (folder) {
    params.set("folder", folder);
  }
  const minScore = $("min-score").value.trim();
  if (minScore) {
    params.set("min_score", minScore);
  }
  if (at) {
    params.set("offset", String(at));
  }
  return params;
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

// "in folder shoes/ (4 images), score >= 0.5": the controls the answer was given with.
function scopeText(answer) {
  const parts = [];
  if (answer.folder !== null && answer.folder !== undefined) {
    parts.push(`in folder ${answer.folder.replace(/\/+$/, "")}/ (${answer.scope} images)`);
  }
  if (answer.min_score !== null && answer.min_score !== undefined) {
    parts.push(`score \u2265 ${answer.min_score}`);
  }
  return parts.length ? `, ${parts.join(", ")}` : "";
}

function moreLikeThisUrl(name) {
  const params = controls(0);
  params.set("name", name);
  return `/?${params}`;
}

function matchItem(match) {
  const item = $("match-template").content.firstElementChild.cloneNode(true);
  const button = item.querySelector("button");
  button.dataset.name = match.name;
  showImage(item.querySelector("img"), match.name);
  item.querySelector("img").alt = match.name;
  item.querySelector(".rank").textContent = `#${match.rank}`;
  item.querySelector(".score").textContent = match.score.toFixed(4);
  item.querySelector(".name").textContent = match.name;
  button.addEventListener("click", () => searchName(match.name));
  const link = item.querySelector(".more-like-this");
  link.href = moreLikeThisUrl(match.name);
  link.dataset.name = match.name;
  link.addEventListener("click", (event) => {
    if (!event.ctrlKey && !event.metaKey && !event.shiftKey && event.button === 0) {
      event.preventDefault();             // a plain click searches here; others open a tab
      searchName(match.name);
    }
  });
  return item;
}

function render(answer, showQuery) {
  releaseThumbnails();
  showQuery($("query-image"));
  $("query-name").textContent = answer.query;
  if (answer.version !== $("version").textContent) {
    api("/version").then(showKnobs).catch(() => {});   // another version was swapped in
  }
  $("version").textContent = answer.version;
  const first = answer.offset + 1;
  const last = answer.offset + answer.results.length;
  let status = `${answer.results.length} most similar of ${answer.images} images to ` +
    `${answer.query}${scopeText(answer)}`;
  if (!answer.results.length) {
    status += answer.offset ? ": no more results" : ": no result (lower the minimum score?)";
  }
  $("status").textContent = status;
  $("matches").replaceChildren(...answer.results.map(matchItem));
  $("page").textContent = answer.results.length ? `results ${first}\u2013${last}` : "";
  $("prev").disabled = answer.offset === 0;
  $("next").disabled = !answer.more;
  $("pager").hidden = answer.offset === 0 && !answer.more;
  $("empty").hidden = true;
  $("results").hidden = false;
}

// Asks for one page of the query; only the latest request's answer is shown.
async function run(query, at) {
  current = query;
  offset = at;
  const mine = ++ticket;
  showError("");
  setBusy(`searching ${query.label}\u2026`);
  try {
    const answer = await query.request(controls(at));
    if (mine === ticket) {
      render(answer, query.showQuery);
      document.body.dataset.state = "ready";
    }
  } catch (err) {
    if (mine === ticket) {
      setBusy("");
      showError(err.message);
    }
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
  $("file").value = "";        // choosing the same file again searches again
  const src = queryUrl;
  showView("search");
  run({
    label: file.name,
    request: (params) => {
      const form = new FormData();
      form.append("image", file, file.name);
      return api(`/search?${params}`, { method: "POST", body: form });
    },
    showQuery: (img) => { img.src = src; },
  }, 0);
}

function searchName(name, at) {
  showView("search");
  run({
    label: name,
    request: (params) => {
      params.set("name", name);
      return api(`/search?${params}`);
    },
    showQuery: (img) => showImage(img, name),
  }, at || 0);
}

function groupItem(group) {
  const item = $("group-template").content.firstElementChild.cloneNode(true);
  item.querySelector(".group-title").textContent =
    `Group ${group.group} \u00b7 ${group.size} photos`;
  const members = item.querySelector(".members");
  for (const photo of group.photos) {
    const member = $("match-template").content.firstElementChild.cloneNode(true);
    member.querySelector(".more-like-this").remove();
    const button = member.querySelector("button");
    button.dataset.name = photo.name;
    button.title = "search with this image";
    showImage(member.querySelector("img"), photo.name);
    member.querySelector("img").alt = photo.name;
    member.querySelector(".rank").textContent = `cos ${photo.score.toFixed(4)}`;
    member.querySelector(".score").remove();
    member.querySelector(".name").textContent = photo.name;
    button.addEventListener("click", () => searchName(photo.name));
    members.appendChild(member);
  }
  return item;
}

async function showDuplicates() {
  showView("duplicates");
  showError("");
  $("groups").replaceChildren();
  $("duplicates-summary").textContent = "loading the near-duplicate groups\u2026";
  document.body.dataset.state = "busy";
  try {
    const report = await api("/duplicates");
    const groups = report.groups.length;
    $("duplicates-summary").textContent =
      `${groups} group${groups === 1 ? "" : "s"} of near-duplicates (${report.photos_in_groups} of ` +
      `${report.photos} photos, cosine \u2265 ${report.threshold}, ${report.index} index)`;
    $("groups").replaceChildren(...report.groups.map(groupItem));
  } catch (err) {
    $("duplicates-summary").textContent = "";
    showError(err.message);
  }
  document.body.dataset.state = "ready";
}

function showView(name) {
  $("search-view").hidden = name !== "search";
  $("duplicates-view").hidden = name !== "duplicates";
  $("show-search").setAttribute("aria-pressed", String(name === "search"));
  $("show-duplicates").setAttribute("aria-pressed", String(name === "duplicates"));
}

// The controls changed: the query shown is asked again from its first page.
function again() {
  if (current) {
    run(current, 0);
  }
}

// The retrieval knobs the version serves, and their preset, on one line.
function showKnobs(info) {
  const knobs = Object.entries(info.knobs).map(([name, value]) => `${name} ${value}`);
  $("knobs").textContent = `settings (preset ${info.preset}): ${knobs.join(" \u00b7 ")}`;
}

function connect() {
  api("/version").then((info) => {
    $("version").textContent = info.version;
    showKnobs(info);
    $("n").max = info.max_n;
    $("image-count").textContent = String(info.images);
    showError("");
    setBusy("");
    const asked = new URLSearchParams(window.location.search);
    $("n").value = asked.get("n") || info.default_n;
    $("folder").value = asked.get("folder") || "";
    $("min-score").value = asked.get("min_score") || "";
    if (asked.get("name") && !current) {
      searchName(asked.get("name"), Number.parseInt(asked.get("offset"), 10) || 0);
    }
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
  $("options").addEventListener("submit", (event) => {
    event.preventDefault();
    again();
  });
  for (const id of ["n", "folder", "min-score"]) {
    $(id).addEventListener("change", again);
  }
  $("prev").addEventListener("click", () => run(current, Math.max(0, offset - count())));
  $("next").addEventListener("click", () => run(current, offset + count()));
  $("show-search").addEventListener("click", () => showView("search"));
  $("show-duplicates").addEventListener("click", showDuplicates);
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
