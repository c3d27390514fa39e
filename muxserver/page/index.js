"use strict";
const cfg = JSON.parse(document.body.dataset.settings);
const body = document.getElementById("entries");
const message = document.getElementById("message");
const TUS = {"Tus-Resumable": "1.0.0"};
const PIECE = 8 * 1024 * 1024;
const KEY = "muxserver-upload:";
const RETRIES = [1, 2, 4, 8, 16];
let counting = 0;  // the folder counting under way (a newer listing stops an older one's)  // seconds to wait before asking again after a lost connection
document.getElementById("drop").hidden = !cfg.write;
document.getElementById("pick-files").hidden = !cfg.write;
document.getElementById("pick-folder").hidden = !cfg.write;

function human(n) {  // the units of ls and the console: B, KiB, MiB, GiB
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i ? n.toFixed(1) + " " + units[i] : n + " B";
}
function duration(s) {
  if (!isFinite(s) || s < 0) return "";
  s = Math.round(s);
  return s >= 3600 ? Math.floor(s / 3600) + " h " + Math.floor(s % 3600 / 60) + " min"
       : s >= 60 ? Math.floor(s / 60) + " min " + (s % 60) + " s" : s + " s";
}
function say(text, kind) { message.textContent = text; message.className = kind || ""; }
function why(status, text) {  // the server's sentence, said once, without its number
  return (text || "").replace(/^\d{3} /, "").trim() || ("HTTP " + status);
}
function urlOf(name, dir) {
  return cfg.base + encodeURIComponent(name).replace(/%2F/g, "/") + (dir ? "/" : "");
}

// ---- the table: sorting, filtering, actions, refreshing after changes
let sortKey = "name", sortDir = 1;
function summarize() {  // "2 folders, 5 files, 24.3 MiB"
  let dirs = 0, files = 0, bytes = 0;
  for (const row of body.querySelectorAll("tr[data-name]")) {
    if (row.hidden) continue;
    if (row.dataset.dir === "1") dirs++; else { files++; bytes += +row.dataset.size; }
  }
  const count = (n, what) => n + " " + what + (n === 1 ? "" : "s");
  document.getElementById("summary").textContent =
    count(dirs, "folder") + ", " + count(files, "file") + ", " + human(bytes);
}
function sortRows() {
  const rows = Array.from(body.querySelectorAll("tr[data-name]"));
  const value = r => sortKey === "name" ? r.dataset.name.toLowerCase() : +r.dataset[sortKey];
  rows.sort((a, b) => (b.dataset.dir - a.dataset.dir)
    || (value(a) < value(b) ? -sortDir : value(a) > value(b) ? sortDir : 0));
  for (const row of rows) body.append(row);
  for (const note of body.querySelectorAll("tr.note")) body.append(note);
}
for (const th of document.querySelectorAll("th[data-key]")) {
  th.querySelector("button").addEventListener("click", () => {
    sortDir = sortKey === th.dataset.key ? -sortDir : 1;
    sortKey = th.dataset.key;
    for (const other of document.querySelectorAll("th[data-key]")) other.removeAttribute("aria-sort");
    th.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
    sortRows();
  });
}
const filter = document.getElementById("filter");
function applyFilter() {
  const wanted = filter.value.trim().toLowerCase();
  let shown = 0, rows = 0;
  for (const row of body.querySelectorAll("tr[data-name]")) {
    row.hidden = wanted !== "" && !row.dataset.name.toLowerCase().includes(wanted);
    rows++; if (!row.hidden) shown++;
  }
  document.getElementById("nomatch").hidden = !(wanted && rows && !shown);
  summarize();
}
filter.addEventListener("input", () => {
  if (searched && !filter.value.trim()) { searched = false; refresh(); return; }
  applyFilter();
});
// Enter in the filter box: a search by name below this folder, at any depth (the server
// walks it in bounded steps; only what this account may read)
let searched = false;
filter.addEventListener("keydown", async e => {
  if (e.key !== "Enter" || !filter.value.trim() || !cfg.read) return;
  e.preventDefault();
  const term = filter.value.trim();
  say("searching below this folder for " + term + "…");
  const r = await fetch(cfg.base + "?search=" + encodeURIComponent(term) + "&format=json",
                        {cache: "no-store"});
  if (!r.ok) { say(why(r.status, await r.text()), "err"); return; }
  const found = await r.json();
  if (filter.value.trim() !== term) return;  // (the box changed meanwhile: not these)
  const total = found.entries.length;
  found.entries = found.entries.slice(0, 1000);  // (a tab must not freeze on a broad term)
  searched = true;
  for (const row of body.querySelectorAll("tr[data-name], tr.empty")) row.remove();
  for (const entry of found.entries) body.append(foundRow(entry));
  sortRows();
  for (const row of body.querySelectorAll("tr[data-name]")) row.hidden = false;
  document.getElementById("nomatch").hidden = found.entries.length > 0;
  summarize();
  say((total > 1000 ? "the first 1000 of " : "") + total + " found below this folder for “" + term + "”" +
      (found.error ? " (incomplete: " + found.error + ")" : "") + "; clear the box to see the folder again",
      found.entries.length ? "ok" : "");
});
function foundRow(entry) {  // a search result: its path below this folder, a link, no actions
  const below = cfg.dir && entry.name.startsWith(cfg.dir + "/") ? entry.name.slice(cfg.dir.length + 1) : entry.name;
  const dir = entry.type === "dir";
  const tr = document.createElement("tr");
  Object.assign(tr.dataset, {dir: dir ? "1" : "0", name: below, size: entry.size,
                             mtime: Math.round(entry.mtime)});
  const link = document.createElement("a");
  link.href = "/" + encodeURIComponent(entry.name).replace(/%2F/g, "/") + (dir ? "/" : "");
  link.textContent = below + (dir ? "/" : "");
  const cells = [link, entry.type === "file" ? human(entry.size) : "", "", ""];
  ["name", "num", "when", "acts"].forEach((cls, i) => {
    const td = document.createElement("td"); td.className = cls; td.append(cells[i]); tr.append(td);
  });
  stamp(tr);
  return tr;
}

function button(label, title, action) {
  const b = document.createElement("button");
  b.type = "button"; b.className = "small"; b.textContent = label; b.title = title;
  b.addEventListener("click", action);
  return b;
}
function addActions(row) {
  const cell = row.querySelector("td.acts");
  const name = row.dataset.name, dir = row.dataset.dir === "1";
  if (dir) {
    const zip = document.createElement("a");
    zip.href = urlOf(name, true) + "?download=zip"; zip.textContent = "zip";
    zip.title = "download " + name + " as one zip"; zip.className = "button small";
    zip.setAttribute("download", "");
    cell.append(zip);
  } else {
    cell.append(button("SHA-256", "show the SHA-256 of " + name, () => showHash(row)));
  }
  if (cfg.share) cell.append(button("Share", "make a link to " + name, () =>
    openShare((cfg.dir ? cfg.dir + "/" : "") + name, dir)));
  if (cfg.delete && cfg.write) cell.append(button("Rename", "rename " + name, () => rename(row)));
  if (cfg.delete) cell.append(button("Delete", "delete " + name, () => remove(row)));
}
async function showHash(row) {
  const name = row.dataset.name;
  say("hashing " + name + "…");
  const r = await fetch(urlOf(name), {method: "HEAD", cache: "no-store"});
  const sha = (r.headers.get("ETag") || "").replace(/"/g, "");
  if (!r.ok || !sha) { say(name + ": " + why(r.status, ""), "err"); return; }
  const cell = row.querySelector("td.name");
  let code = cell.querySelector("code.sha");
  if (!code) {
    code = document.createElement("code"); code.className = "sha";
    cell.append(document.createElement("br"), code);
    const copy = button("Copy", "copy the SHA-256", async () => {
      try { await navigator.clipboard.writeText(sha); say("copied the SHA-256 of " + name, "ok"); }
      catch (e) { window.getSelection().selectAllChildren(code); say("selected: press Ctrl-C to copy"); }
    });
    cell.append(" ", copy);
  }
  code.textContent = sha;
  say("");
}
// ---- the page's own questions (no prompt() or confirm(): they block the page, and a
// phone shows them as it likes): a title, a sentence, maybe a text field, buttons
let asking = Promise.resolve();  // (one question at a time: a second waits its turn)
function ask(question) {
  const answered = asking.then(() => askNow(question));
  asking = answered.catch(() => {});
  return answered;
}
function askNow({title, text, input = null, buttons, all = false}) {
  const dialog = document.getElementById("ask");
  document.getElementById("ask-title").textContent = title;
  document.getElementById("ask-text").textContent = text;
  const field = document.getElementById("ask-input");
  field.hidden = input === null; field.value = input || "";
  document.getElementById("ask-all-row").hidden = !all;
  document.getElementById("ask-all").checked = false;
  const row = document.getElementById("ask-buttons");
  row.replaceChildren();
  return new Promise(resolve => {
    const done = choice => {  // (once: Escape and a button both lead here)
      dialog.oncancel = null; dialog.close();
      resolve({choice, value: field.value.trim(), all: document.getElementById("ask-all").checked});
    };
    for (const b of buttons) {
      const el = document.createElement("button");
      el.type = "button"; el.textContent = b.label; el.dataset.choice = b.value;
      if (b.primary) el.className = "primary";
      el.addEventListener("click", () => done(b.value));
      row.append(el);
    }
    field.onkeydown = e => { if (e.key === "Enter") { e.preventDefault(); done(buttons[0].value); } };
    dialog.oncancel = e => { e.preventDefault(); done(null); };  // (Escape: no answer)
    dialog.showModal();
    (input === null ? row.querySelector("button.primary") || row.firstChild : field).focus();
    if (input !== null) field.select();
  });
}
async function rename(row) {
  const old = row.dataset.name, dir = row.dataset.dir === "1";
  const answer = await ask({title: "Rename " + old, text: "The new name:", input: old,
    buttons: [{label: "Rename", value: "rename", primary: true}, {label: "Cancel", value: null}]});
  const fresh = answer.value;
  if (answer.choice !== "rename" || !fresh || fresh === old) return;
  const r = await fetch(urlOf(old, dir), {method: "MOVE", headers: {
    "Destination": urlOf(fresh, dir), "Overwrite": "F"}});
  if (r.ok) { say("renamed " + old + " to " + fresh, "ok"); refresh(); }
  else say(r.status === 412 ? fresh + " exists already" : old + ": " + why(r.status, await r.text()), "err");
}
async function remove(row) {
  const name = row.dataset.name, dir = row.dataset.dir === "1";
  const answer = await ask({title: "Delete " + name + "?", text: dir
    ? "The folder and everything in it will be gone for good." : "The file will be gone for good.",
    buttons: [{label: "Delete", value: "delete", primary: true}, {label: "Cancel", value: null}]});
  if (answer.choice !== "delete") return;
  const r = await fetch(urlOf(name, dir), {method: "DELETE"});
  if (r.ok) { say("deleted " + name, "ok"); refresh(); }
  else say(name + ": " + why(r.status, await r.text()), "err");
}
document.getElementById("newfolder").addEventListener("click", async () => {
  const answer = await ask({title: "New folder", text: "Its name:", input: "",
    buttons: [{label: "Make it", value: "make", primary: true}, {label: "Cancel", value: null}]});
  const name = answer.value;
  if (answer.choice !== "make" || !name) return;
  const r = await fetch(urlOf(name, true), {method: "MKCOL"});
  if (r.ok) { say("made " + name + "/", "ok"); refresh(); }
  else say(r.status === 405 ? name + " exists already" : name + ": " + why(r.status, await r.text()), "err");
});

function stamp(row) {  // the time of a row in this browser's time zone: 2026-11-25 17:34
  const d = new Date(row.dataset.mtime * 1000), two = n => String(n).padStart(2, "0");
  const hm = document.createElement("span"); hm.className = "hm";
  hm.textContent = two(d.getHours()) + ":" + two(d.getMinutes());
  row.querySelector("td.when").replaceChildren(
    d.getFullYear() + "-" + two(d.getMonth() + 1) + "-" + two(d.getDate()) + " ", hm);
}
function rowFor(entry) {
  const leaf = entry.name.split("/").pop(), dir = entry.type === "dir";
  const tr = document.createElement("tr");
  Object.assign(tr.dataset, {dir: dir ? "1" : "0", name: leaf, size: entry.size,
                             mtime: Math.round(entry.mtime)});
  const link = document.createElement("a");
  link.href = urlOf(leaf, dir); link.textContent = leaf + (dir ? "/" : "");
  const cells = [link, entry.type === "file" ? human(entry.size) : "", "", ""];
  ["name", "num", "when", "acts"].forEach((cls, i) => {
    const td = document.createElement("td"); td.className = cls; td.append(cells[i]); tr.append(td);
  });
  stamp(tr);
  addActions(tr);
  return tr;
}
async function refresh() {
  if (!cfg.read) return;  // (a drop box: nothing to show)
  const r = await fetch(cfg.base + "?format=json", {cache: "no-store"});
  if (!r.ok) return;
  const listing = await r.json();
  for (const row of body.querySelectorAll("tr[data-name], tr.empty")) row.remove();
  for (const entry of listing.entries) body.append(rowFor(entry));
  sortRows(); applyFilter(); countFolders();
}
for (const row of body.querySelectorAll("tr[data-name]")) { addActions(row); stamp(row); }
sortRows(); summarize(); countFolders();

// How many entries each folder holds, in its size column: asked of the server a folder
// at a time (it counts in bounded steps, up to 10,000), for the first hundred folders.
async function countFolders() {
  const mine = ++counting;
  const rows = Array.from(body.querySelectorAll('tr[data-dir="1"][data-name]')).slice(0, 100);
  for (const row of rows) {
    if (mine !== counting || searched) return;
    if (!row.isConnected) continue;
    const r = await fetch(urlOf(row.dataset.name, true) + "?count", {cache: "no-store"}).catch(() => null);
    if (!r || !r.ok) continue;
    const {count, more} = await r.json();
    const cell = row.querySelector("td.num");
    if (cell && row.isConnected) {
      cell.textContent = count + (more ? "+" : "") + (count === 1 && !more ? " item" : " items");
      cell.classList.add("muted");
    }
  }
}

// ---- uploads: tus, in pieces, each with its SHA-256; resumed from where they stopped
function b64(bytes) { let s = ""; for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b); return btoa(s); }
function b64text(text) { return b64(new TextEncoder().encode(text)); }
function remembered(file, target) { return KEY + target + "|" + file.size + "|" + file.lastModified; }
function patch(url, offset, data, checksum, onProgress) {
  return new Promise(resolve => {
    const xhr = new XMLHttpRequest();
    xhr.open("PATCH", url);
    xhr.setRequestHeader("Tus-Resumable", "1.0.0");
    xhr.setRequestHeader("Content-Type", "application/offset+octet-stream");
    xhr.setRequestHeader("Upload-Offset", String(offset));
    if (checksum) xhr.setRequestHeader("Upload-Checksum", "sha256 " + checksum);
    xhr.upload.onprogress = e => onProgress(e.loaded);
    xhr.onload = () => resolve(xhr);
    xhr.onerror = xhr.onabort = () => resolve(null);
    xhr.send(data);
  });
}
async function heldOf(url) {  // what the server holds of an upload; null: nothing (any more)
  for (let waits = 0; ; waits++) {
    const h = await fetch(url, {method: "HEAD", headers: TUS, cache: "no-store"}).catch(() => null);
    if (!h || h.status !== 423 || waits >= 60) return h && h.ok ? +h.headers.get("Upload-Offset") : null;
    // 423: a request of ours that the network lost is still writing it on the server
    await new Promise(wake => setTimeout(wake, 1000 * (+h.headers.get("Retry-After") || 1)));
  }
}
// The queue: every file asked for is a row, uploaded one after another, and a line
// above says how far the whole of it is (files, bytes, rate, time left).
const queue = {files: 0, ended: 0, failed: 0, bytes: 0, endedBytes: 0, current: 0,
               startedAt: 0, sentAtStart: 0};
function showQueue() {
  const q = queue, sent = q.endedBytes + q.current, busy = q.ended < q.files;
  const seconds = (performance.now() - q.startedAt) / 1000;
  const rate = seconds > 1 ? (sent - q.sentAtStart) / seconds : 0;
  document.getElementById("queue").textContent = (busy ? "Uploading: " : "Uploaded: ")
    + (q.ended - q.failed) + " of " + q.files + " file" + (q.files === 1 ? "" : "s")
    + (q.failed ? " (" + q.failed + " not)" : "") + ", " + human(sent) + " of " + human(q.bytes)
    + (busy && rate ? ", " + human(rate) + "/s, " + duration((q.bytes - sent) / rate) + " left" : "");
}
function uploadItem(label, size) {
  const li = document.createElement("li");
  const name = document.createElement("span"); name.textContent = label;
  const state = document.createElement("span"); state.className = "state"; state.textContent = "waiting";
  const bar = document.createElement("progress"); bar.max = size || 1; bar.value = 0;
  bar.setAttribute("aria-label", "upload of " + label);
  li.append(name, state, bar);
  document.getElementById("uploads").append(li);
  return {li, state, bar};
}
async function upload(file, relative, ui, overwrite) {
  const target = cfg.dir ? cfg.dir + "/" + relative : relative;
  const key = remembered(file, target);
  let url = localStorage.getItem(key), offset = 0;
  if (url) {
    const held = await heldOf(url);
    if (held === null) url = null; else offset = held;
  }
  if (!url) {
    const meta = "filename " + b64text(target)
      + (file.lastModified > 0 ? ",mtime " + b64text(String(file.lastModified / 1000)) : "")
      + (overwrite ? ",overwrite " + b64text("1") : "");
    const r = await fetch("/.tus/", {method: "POST", headers: Object.assign(
      {"Upload-Length": String(file.size), "Upload-Metadata": meta}, TUS)});
    if (!r.ok) {
      ui.state.className = "state err";
      ui.state.textContent = r.status === 409 ? relative + " exists; it was not replaced"
                                              : why(r.status, await r.text());
      return false;
    }
    url = r.headers.get("Location");
    localStorage.setItem(key, url);
  } else if (offset) {
    ui.state.textContent = "resuming at " + human(offset);
    queue.sentAtStart += offset;  // (sent before: not this queue's rate)
  }
  const started = performance.now(), from = offset;
  let rate = 0, damaged = 0, lost = 0;
  do {
    const piece = await file.slice(offset, offset + PIECE).arrayBuffer();
    const checksum = crypto.subtle ? b64(await crypto.subtle.digest("SHA-256", piece)) : null;
    const xhr = await patch(url, offset, piece, checksum, loaded => {
      const done = offset + loaded, seconds = (performance.now() - started) / 1000;
      rate = seconds > 0.5 ? (done - from) / seconds : rate;
      ui.bar.value = done;
      queue.current = done; showQueue();
      ui.state.textContent = Math.floor(100 * done / (file.size || 1)) + " %  " +
        (rate ? human(rate) + "/s, " + duration((file.size - done) / rate) + " left" : "");
    });
    if (!xhr) {  // the network went away: ask again a few times, then leave it to the person
      if (++lost > RETRIES.length) { ui.state.className = "state err";
        ui.state.textContent = "connection lost at " + human(offset) + ": choose the file again to resume";
        return false; }
      ui.state.textContent = "connection lost; trying again in " + RETRIES[lost - 1] + " s";
      await new Promise(wake => setTimeout(wake, RETRIES[lost - 1] * 1000));
      const held = await heldOf(url);
      if (held !== null) offset = held;
      continue;
    }
    lost = 0;
    if (xhr.status === 204 || xhr.status === 409) {  // (409: the server holds another amount)
      offset = +xhr.getResponseHeader("Upload-Offset");
    } else if (xhr.status === 423) {  // an earlier request of ours still writes it: wait
      const held = await heldOf(url);
      if (held !== null) offset = held;
    } else if (xhr.status !== 460 || ++damaged > 3) {  // (460: damaged on the way: again)
      ui.state.className = "state err"; ui.state.textContent = why(xhr.status, xhr.responseText);
      if (xhr.status === 404) localStorage.removeItem(key);
      return false;
    }
  } while (offset < file.size);
  localStorage.removeItem(key);
  ui.bar.value = ui.bar.max;
  ui.state.className = "state ok"; ui.state.textContent = "done, " + human(file.size) + ", verified";
  return true;
}
function freeName(name, dir, taken) {  // "notes (2).txt", "photos (2)": a name not taken
  const dot = dir ? -1 : name.lastIndexOf(".");
  const stem = dot > 0 ? name.slice(0, dot) : name, ext = dot > 0 ? name.slice(dot) : "";
  for (let n = 2; ; n++) if (!taken.has(stem + " (" + n + ")" + ext)) return stem + " (" + n + ")" + ext;
}
async function settleNames(items) {
  if (searched) { filter.value = ""; searched = false; await refresh(); }  // (this folder's names)
  // A name taken in this folder is never replaced without asking: Replace (where the
  // server allows it), Keep both (the new one under a free name), or Skip. A folder
  // whose name is taken is added into, or kept beside, or skipped.
  const taken = new Set(cfg.read ? Array.from(body.querySelectorAll("tr[data-name]"),
                                              r => r.dataset.name) : []);
  const tops = [...new Set(items.map(([, rel]) => rel.split("/")[0]))];
  const clashes = tops.filter(top => taken.has(top));
  const decided = new Map();
  const always = {file: null, dir: null};  // ("the same for the rest": files and folders apart)
  for (const top of clashes) {
    const dir = items.some(([, rel]) => rel.startsWith(top + "/"));
    let choice = always[dir ? "dir" : "file"];
    if (!choice) {
      const buttons = dir ? [{label: "Add into it", value: "into", primary: true}]
        : cfg.replace ? [{label: "Replace", value: "replace", primary: true}] : [];
      buttons.push({label: "Keep both", value: "both", primary: !buttons.length},
                   {label: "Skip", value: "skip"});
      const answer = await ask({title: top + (dir ? "/" : "") + " is here already",
        text: dir ? "A folder of that name is in this one. Add the new files into it (a file "
                    + "whose name is taken there is not replaced), keep both, or skip it?"
                  : "A file of that name is in this folder. " + (cfg.replace ? "Replace it, " : "")
                    + "keep both (the new one as " + freeName(top, dir, taken) + "), or skip it?",
        buttons, all: clashes.length > 1});
      choice = answer.choice || "skip";
      if (answer.all) always[dir ? "dir" : "file"] = choice;
    }
    if (choice === "both") {
      const fresh = freeName(top, dir, taken);
      taken.add(fresh);
      decided.set(top, {rename: fresh});
    } else {
      decided.set(top, {[choice]: true});
    }
  }
  const settled = [];
  for (const [file, rel] of items) {
    const top = rel.split("/")[0], how = decided.get(top) || {};
    if (how.skip) continue;
    const named = how.rename ? how.rename + rel.slice(top.length) : rel;
    settled.push([file, named, !!how.replace]);
  }
  return settled;
}
async function makeFolders(relative) {  // an empty folder of a folder upload (and parents)
  const path = relative.replace(/\/$/, "");
  const r = await fetch(urlOf(path, true), {method: "MKCOL"});
  if (r.ok || r.status === 405) return true;  // (405: it is there already)
  const parent = path.slice(0, path.lastIndexOf("/"));
  if (r.status !== 409 || !parent || !(await makeFolders(parent))) return false;
  return (await fetch(urlOf(path, true), {method: "MKCOL"})).ok;  // (409: its parent was not)
}
async function uploadAll(items) {
  const settled = await settleNames(items);
  const files = settled.filter(([file]) => file);
  if (!queue.startedAt || queue.ended === queue.files) {  // (a new queue: rate from now)
    Object.assign(queue, {files: 0, ended: 0, failed: 0, bytes: 0, endedBytes: 0, current: 0,
                          startedAt: performance.now(), sentAtStart: 0});
  }
  queue.files += files.length;
  queue.bytes += files.reduce((sum, [file]) => sum + file.size, 0);
  const rows = settled.map(([file, rel]) => file ? uploadItem(rel, file.size) : null);
  showQueue();
  let all = true;
  for (const [index, [file, rel, overwrite]] of settled.entries()) {
    if (!file) { all = (await makeFolders(rel).catch(() => false)) && all; continue; }
    queue.current = 0;
    const ok = await upload(file, rel, rows[index], overwrite).catch(error => {
      rows[index].state.className = "state err";  // (a file that cannot be read, a lost network)
      rows[index].state.textContent = "not uploaded: " + error.message;
      return false;
    });
    queue.ended++; queue.endedBytes += ok ? file.size : queue.current; queue.current = 0;
    if (!ok) queue.failed++;
    all = ok && all;
    showQueue();
  }
  await refresh();
  showResumable();
  if (all && files.length) say(files.length + " file" + (files.length > 1 ? "s" : "") + " uploaded", "ok");
}
function picked(input) {
  const files = Array.from(input.files).map(f => [f, f.webkitRelativePath || f.name]);
  input.value = "";
  uploadAll(files);
}
for (const kind of ["files", "folder"]) {  // (buttons, not labels: reachable by keyboard)
  const input = document.getElementById(kind);
  input.addEventListener("change", () => picked(input));
  document.getElementById("pick-" + kind).addEventListener("click", () => input.click());
}

function readEntry(entry, path, out) {  // a dropped folder, all the way down
  return new Promise(resolve => {
    if (entry.isFile) { entry.file(f => { out.push([f, path + f.name]); resolve(); }, resolve); return; }
    const reader = entry.createReader();
    let children = 0;
    const more = () => reader.readEntries(async batch => {
      if (!batch.length) {  // (an empty folder is made too: [null, "its/path/"])
        if (!children) out.push([null, path + entry.name + "/"]);
        resolve(); return;
      }
      children += batch.length;
      for (const child of batch) await readEntry(child, path + entry.name + "/", out);
      more();
    }, resolve);
    more();
  });
}
if (cfg.write) {
  document.addEventListener("dragover", e => { e.preventDefault(); document.body.classList.add("dragging"); });
  document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
  document.addEventListener("drop", async e => {
    e.preventDefault(); document.body.classList.remove("dragging");
    const out = [];
    const entries = Array.from(e.dataTransfer.items || []).map(i => i.webkitGetAsEntry && i.webkitGetAsEntry());
    if (entries.every(Boolean)) { for (const entry of entries) await readEntry(entry, "", out); }
    else for (const f of e.dataTransfer.files) out.push([f, f.name]);
    uploadAll(out);
  });
}
function showResumable() {  // unfinished uploads to this folder, from before a reload
  const names = [];
  for (let i = 0; i < localStorage.length; i++) {
    const key = localStorage.key(i);
    if (!key.startsWith(KEY)) continue;
    const target = key.slice(KEY.length).split("|")[0];
    if (target.slice(0, target.lastIndexOf("/") + 1) === (cfg.dir ? cfg.dir + "/" : "")) names.push(target.split("/").pop());
  }
  const p = document.getElementById("resumable");
  p.hidden = !names.length;
  p.textContent = names.length ? "Unfinished: " + names.join(", ") +
    ". Choose or drop the same file again: it continues where it stopped." : "";
}
showResumable();

// ---- who is signed in, signing out, and share links (http_signin.py)
if (cfg.who || cfg.signedIn) {
  document.getElementById("who").hidden = false;
  document.getElementById("who-name").textContent = cfg.link ? "a shared link"
    : cfg.who || "a token";
  document.getElementById("signout").hidden = !cfg.signedIn;
}
document.getElementById("signout").addEventListener("click", async () => {
  await fetch("/.muxserver-auth/signout", {method: "POST", credentials: "same-origin"});
  location.replace("/");
});
const dialog = document.getElementById("share-dialog");
let sharing = null;  // {name, dir}: what the dialog shares
function shareSay(text, kind) {
  const m = document.getElementById("share-message"); m.textContent = text; m.className = kind || "";
}
function openShare(name, dir) {
  sharing = {name, dir};
  document.getElementById("share-title").textContent = "Share " + (dir ? "the folder " : "")
    + "/" + name + (dir && name ? "/" : "");
  document.getElementById("share-what").textContent = dir
    ? "Anyone with the link sees this folder and what it holds, and nothing above it."
    : "Anyone with the link can download this file, and nothing else.";
  document.getElementById("share-write-row").hidden = !(dir && cfg.write);
  document.getElementById("share-write").checked = false;
  document.getElementById("share-result").hidden = true;
  shareSay("");
  dialog.showModal();
}
document.getElementById("share-make").addEventListener("click", async () => {
  const write = document.getElementById("share-write").checked;
  const query = new URLSearchParams({name: sharing.name,
    expires: document.getElementById("share-expires").value, write: write ? "1" : "0"});
  shareSay("Making the link…");
  const r = await fetch("/.muxserver-auth/share?" + query, {method: "POST", credentials: "same-origin"});
  if (!r.ok) { shareSay(why(r.status, await r.text()), "err"); return; }
  const made = await r.json();
  document.getElementById("share-url").value = made.url;
  let qr = document.getElementById("share-qr");
  if (!qr) {  // (made here: the page's HTML has no image a name could pass for)
    qr = document.createElement("img");
    qr.id = "share-qr"; qr.className = "qr"; qr.alt = "The link as a QR code, for a phone";
    document.getElementById("share-qr-box").append(qr);
  }
  qr.src = made.qr;
  document.getElementById("share-result").hidden = false;
  const until = new Date(made.expires * 1000).toLocaleString();
  shareSay((made.write ? "A drop box link" : "A read-only link") + ", until " + until + ".", "ok");
  document.getElementById("share-url").select();
});
document.getElementById("share-copy").addEventListener("click", async () => {
  const field = document.getElementById("share-url");
  try { await navigator.clipboard.writeText(field.value); shareSay("Copied the link.", "ok"); }
  catch (e) { field.select(); shareSay("Selected: press Ctrl-C to copy."); }
});
document.getElementById("share-close").addEventListener("click", () => dialog.close());
if (cfg.share) {
  const folderButton = document.getElementById("sharefolder");
  folderButton.hidden = false;
  folderButton.addEventListener("click", () => openShare(cfg.dir, true));
}
