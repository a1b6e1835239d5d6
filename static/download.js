/* File downloads (PDF, CSV). The token travels in a header, so a plain link
   cannot fetch the file: it is fetched with the token, kept as a Blob and
   saved through a temporary object URL. */

import * as api from "./api.js";
import { h, showMessage } from "./dom.js";
import { showApiError } from "./field-errors.js";
import { byteSize } from "./format.js";

const KEEP_URL_MS = 60_000; // long enough for the browser to start saving

/** Save `blob` as `filename` through a temporary object URL. */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: filename, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), KEEP_URL_MS);
}

/**
 * A button that downloads a file. `source()` returns [path, query, fallback
 * name] at click time (so it follows the current filters); the outcome goes
 * to the message line `line`.
 */
export function downloadButton(label, source, line, attrs = {}) {
  const button = h("button", { type: "button", class: "secondary", ...attrs }, label);
  button.addEventListener("click", async () => {
    const [path, query, fallback] = source();
    button.disabled = true;
    showMessage(line, `Preparing ${fallback}…`, "info");
    try {
      const file = await api.fetchFile(path, query, fallback);
      saveBlob(file.blob, file.filename);
      showMessage(line, `Downloaded ${file.filename} (${byteSize(file.blob.size)}).`, "ok");
    } catch (error) {
      showApiError(line, `Could not download ${fallback}`, error);
    } finally {
      button.disabled = false;
    }
  });
  return button;
}
