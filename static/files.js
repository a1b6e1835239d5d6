/* One customer's files (§8), as one component for the customer portal (its
   own files) and the staff Storage page (a chosen customer's, named with
   `?customer_id=`): the quota bar, upload with a progress bar driven by the
   browser's upload events, the list (a prefix filter, pages), download
   (fetch → Blob, the token is a header) and delete after a confirmation.
   Readers get the list and downloads; writers also upload and delete. */

import * as api from "./api.js";
import { meterBar } from "./charts.js";
import { display, field, h, messageLine, showMessage, table, timeElement } from "./dom.js";
import { saveBlob } from "./download.js";
import { showApiError } from "./field-errors.js";
import { byteSize } from "./format.js";

const PAGE_SIZE = 100;
const WARN_PERCENT = 80; // the quota bar turns amber from here, red when full
const COLUMNS = 5;

/** The object's address: each '/'-separated segment of the key percent-encoded, the slashes kept. */
export function objectPath(key) {
  return `/v1/objects/${String(key).split("/").map(encodeURIComponent).join("/")}`;
}

/** The last segment of a key: the name its download is saved under when the server gives none. */
function baseName(key) {
  return String(key).split("/").filter(Boolean).pop() || "download";
}

/** "2.5 MB" with the exact count as its tooltip. */
function sizeElement(bytes) {
  return h("span", { title: `${bytes} bytes` }, byteSize(bytes));
}

/** How full a quota is, as text: "<1%", "42%", "100%". */
function percentText(used, quota) {
  if (!(quota > 0)) return used > 0 ? "100%" : "0%";
  const percent = (used / quota) * 100;
  if (percent > 0 && percent < 1) return "<1%";
  return `${Math.floor(percent)}%`;
}

/**
 * The quota bar: bytes stored of the customer's quota ("2.5 MB of 5 MB ·
 * 50%"), or the bytes stored and "no quota" when `quota` is null.
 */
export function quotaGauge(used, quota) {
  const usedBytes = Number(used) || 0;
  if (quota === null || quota === undefined) {
    return h("div", { class: "quota no-quota", "data-used": used, "data-quota": "" },
      h("p", { class: "quota-text" }, h("strong", {}, sizeElement(usedBytes)), " stored · ",
        h("span", { class: "muted" }, "no quota")));
  }
  const quotaBytes = Number(quota);
  const percent = quotaBytes > 0 ? (usedBytes / quotaBytes) * 100 : 100;
  const state = percent >= 100 ? "full" : percent >= WARN_PERCENT ? "warn" : "ok";
  const label = `${byteSize(usedBytes)} of ${byteSize(quotaBytes)} used (${percentText(usedBytes, quotaBytes)})`;
  const bar = meterBar(usedBytes, quotaBytes, `Storage: ${label}`);
  bar.classList.add("quota-bar", state);
  return h("div", { class: `quota ${state}`, "data-used": used, "data-quota": quota },
    h("p", { class: "quota-text" }, h("strong", {}, sizeElement(usedBytes)), " of ", sizeElement(quotaBytes),
      h("span", { class: "muted quota-percent" }, ` · ${percentText(usedBytes, quotaBytes)}`)),
    bar);
}

/**
 * The files panel. `customerId` null means the signed-in tenant's own files;
 * staff pass the customer they chose. `onChange()` runs after an upload or a
 * delete (the page may refresh what depends on storage: usage, a table).
 * `title` (text or a node) heads the panel, `aside` goes beside it.
 * Returns `{ element, reload }`.
 */
export function filesPanel({ customerId = null, canWrite = false, onChange = () => {}, title = "Files", aside = null } = {}) {
  const scope = customerId === null || customerId === undefined ? {} : { customer_id: customerId };
  const listStatus = messageLine();
  const outcome = messageLine(); // what the last action did
  const quota = h("div", { class: "quota-slot", id: "files-quota" }, h("p", { class: "muted" }, "Loading…"));
  const { table: list, body } = table(["Name", ["Size", "num"], "Type", "Updated", ["", "row-actions"]], "files");
  const more = h("button", { type: "button", class: "secondary more", hidden: true }, "Load more");
  const prefixInput = h("input", { name: "prefix", type: "search", placeholder: "e.g. reports/", autocomplete: "off",
    spellcheck: "false" });
  const filter = h("form", { class: "form-inline files-filter", role: "search" },
    field("Name starts with", prefixInput), h("button", { type: "submit", class: "secondary" }, "Filter"));
  let cursor = null;
  let loads = 0;
  let prefix = "";

  async function load(reset) {
    const mine = ++loads;
    try {
      const page = await api.get("/v1/objects", { ...scope, prefix, limit: PAGE_SIZE, cursor: reset ? null : cursor });
      if (mine !== loads) return; // a newer load (a filter, an upload) answers instead
      if (reset) {
        body.replaceChildren();
        quota.replaceChildren(quotaGauge(page.total_bytes, page.quota_bytes));
      }
      for (const object of page.data) body.append(row(object));
      if (reset && page.data.length === 0) {
        body.append(h("tr", {}, h("td", { colspan: COLUMNS, class: "empty" },
          prefix ? `No file’s name starts with “${prefix}”.` : "No files yet.")));
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
      showMessage(listStatus, "");
    } catch (error) {
      if (mine === loads) showApiError(listStatus, "Could not load the files", error);
    }
  }

  /** After an upload or a delete; `refused`: the server said no, so only the usage (calls) moved. */
  function changed(refused = false) {
    if (!refused) load(true);
    onChange();
  }

  function row(object) {
    const actions = h("div", { class: "actions" });
    const line = h("tr", { "data-key": object.key },
      h("td", { class: "name" }, h("span", { class: "key" }, object.key)),
      h("td", { class: "num size" }, sizeElement(object.size)),
      h("td", { class: "type" }, display(object.content_type)),
      h("td", { class: "time updated" }, timeElement(object.updated_at)),
      h("td", { class: "row-actions" }, actions));
    const download = h("button", { type: "button", class: "secondary small download" }, "Download");
    download.addEventListener("click", () => fetchObject(object.key, download));
    actions.append(download);
    if (canWrite) {
      const remove = h("button", { type: "button", class: "secondary small delete" }, "Delete");
      remove.addEventListener("click", () => confirmDelete(line, object, remove));
      actions.append(remove);
    }
    return line;
  }

  async function fetchObject(key, button) {
    button.disabled = true;
    showMessage(outcome, `Downloading “${key}”…`, "info");
    try {
      const file = await api.fetchFile(objectPath(key), scope, baseName(key));
      saveBlob(file.blob, file.filename);
      showMessage(outcome, `Downloaded “${key}” (${byteSize(file.blob.size)}).`, "ok");
    } catch (error) {
      showApiError(outcome, `Could not download “${key}”`, error);
      if (error.status === 404) load(true); // gone meanwhile
    } finally {
      button.disabled = false;
    }
  }

  /** A row under the file asks before anything is deleted. */
  function confirmDelete(line, object, button) {
    const open = line.nextElementSibling;
    if (open && open.classList.contains("confirm-row")) {
      open.querySelector("button.confirm").focus();
      return;
    }
    const confirm = h("button", { type: "button", class: "danger small confirm" }, "Delete");
    const keep = h("button", { type: "button", class: "secondary small keep" }, "Keep it");
    const question = h("tr", { class: "confirm-row", "data-key": object.key },
      h("td", { colspan: COLUMNS }, h("div", { class: "confirm-delete" },
        h("p", {}, `Delete “${object.key}” (${byteSize(object.size)})? This cannot be undone.`),
        h("div", { class: "actions" }, confirm, keep))));
    keep.addEventListener("click", () => {
      question.remove();
      button.focus();
    });
    confirm.addEventListener("click", async () => {
      confirm.disabled = true;
      keep.disabled = true;
      showMessage(outcome, `Deleting “${object.key}”…`, "info");
      try {
        const deleted = await api.del(`${objectPath(object.key)}${api.withQuery("", scope)}`);
        showMessage(outcome, `Deleted “${deleted.key}” (${byteSize(deleted.size)}).`, "ok");
        changed();
      } catch (error) {
        question.remove();
        showApiError(outcome, `Could not delete “${object.key}”`, error);
        if (error.status === 404) load(true);
      }
    });
    line.after(question);
    confirm.focus();
  }

  more.addEventListener("click", () => load(false));
  filter.addEventListener("submit", (event) => {
    event.preventDefault();
    prefix = prefixInput.value; // a prefix is matched as typed: spaces count
    load(true);
  });

  const element = h("section", { class: "card files", id: "files" },
    h("div", { class: "section-head" }, h("h2", { class: "files-title" }, title), aside),
    quota,
    canWrite ? uploadForm(scope, outcome, changed) : null,
    h("div", { class: "files-outcome" }, outcome),
    h("div", { class: "files-list" }, filter, listStatus, list, more));
  load(true);
  return { element, reload: () => load(true) };
}

/**
 * Choose a file, optionally a name (the key: "reports/2025/q3.pdf"), upload
 * it with a progress bar; a second upload waits for the first. The server's
 * answer decides: 201 new, 200 replaced, 409 over the quota, 413 too large.
 */
function uploadForm(scope, outcome, changed) {
  const fileInput = h("input", { type: "file", name: "file", id: "upload-file", required: true });
  const keyInput = h("input", { name: "key", id: "upload-key", maxlength: 512, autocomplete: "off", spellcheck: "false",
    placeholder: "the file’s own name" });
  const submit = h("button", { type: "submit" }, "Upload");
  const cancel = h("button", { type: "button", class: "secondary small cancel-upload", hidden: true }, "Cancel");
  const bar = h("progress", { max: 100, value: 0, "aria-label": "Upload progress" });
  const progressText = h("span", { class: "progress-text" });
  const progress = h("div", { class: "upload-progress", id: "upload-progress", "data-state": "idle", hidden: true },
    bar, h("div", { class: "progress-line" }, progressText, cancel));
  const form = h("form", { class: "form-inline upload", id: "upload-form", novalidate: true },
    field("File", fileInput), field("Save as (optional)", keyInput), submit);
  let abort = null;

  fileInput.addEventListener("change", () => {
    const file = fileInput.files[0];
    keyInput.placeholder = file ? file.name : "the file’s own name";
  });
  cancel.addEventListener("click", () => abort && abort());

  function show(state, percent, text) {
    progress.hidden = false;
    progress.dataset.state = state;
    bar.value = percent;
    progressText.textContent = text;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (abort) return; // one upload at a time
    const file = fileInput.files[0];
    if (!file) {
      showMessage(outcome, "Choose a file to upload first.", "error");
      fileInput.focus();
      return;
    }
    const key = keyInput.value.trim() || file.name;
    const url = `${objectPath(key)}${api.withQuery("", scope)}`;
    const upload = api.upload(url, file, {
      contentType: file.type || "application/octet-stream",
      onProgress(loaded, total) {
        const percent = total > 0 ? Math.min(100, Math.floor((loaded / total) * 100)) : 100;
        show("uploading", percent, loaded >= total ? `Sent ${byteSize(total)}; the server is storing it…`
          : `Uploading “${key}”: ${percent}% · ${byteSize(loaded)} of ${byteSize(total)}`);
      },
    });
    abort = upload.abort;
    submit.disabled = true;
    cancel.hidden = false;
    showMessage(outcome, "");
    show("uploading", 0, `Uploading “${key}”: 0% · 0 bytes of ${byteSize(file.size)}`);
    try {
      const { status, data } = await upload.done;
      show("done", 100, `Uploaded ${byteSize(data.size)}.`);
      showMessage(outcome, `${status === 201 ? "Uploaded" : "Replaced"} “${data.key}” (${byteSize(data.size)}).`, "ok");
      form.reset();
      keyInput.placeholder = "the file’s own name";
      changed();
    } catch (error) {
      show("failed", bar.value, error.code === "aborted" ? "Canceled." : "Not uploaded.");
      uploadError(outcome, key, file, error);
      if (error.status >= 400 && error.status !== 401) changed(true); // a refused call is billed as well
    } finally {
      abort = null;
      submit.disabled = false;
      cancel.hidden = true;
    }
  });
  return h("div", { class: "upload-box" }, form, progress);
}

function uploadError(line, key, file, error) {
  const { quota_bytes: quota, used_bytes: used } = error.body || {};
  if (error.code === "quota_exceeded" && quota !== undefined && used !== undefined) {
    const room = Math.max(0, Number(quota) - Number(used));
    showMessage(line, `Could not upload “${key}”: it would go over the storage quota. ${byteSize(used)} of `
      + `${byteSize(quota)} is used; ${byteSize(room)} is free and this file is ${byteSize(file.size)}.`, "error");
    return;
  }
  if (error.code === "aborted") {
    showMessage(line, `The upload of “${key}” was canceled; nothing was stored.`, "info");
    return;
  }
  showApiError(line, `Could not upload “${key}”`, error);
}
