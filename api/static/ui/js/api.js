// The one way the UI talks to the server: the public REST API under /api, exactly as any client does.
// Envelopes are unwrapped here; an error envelope becomes an ApiError with its code, message and details.
// With an API token configured, the first 401 asks for it once (token dialog); it is kept in localStorage
// and sent as `Authorization: Bearer <token>`, never in a URL.

const TOKEN_KEY = "modelyard.apiToken";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
}

let askToken = null; // set by app.js: () => Promise<string> that shows the token dialog

export function onTokenNeeded(callback) {
  askToken = callback;
}

export function storedToken() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

export function forgetToken() {
  localStorage.removeItem(TOKEN_KEY);
}

export function authHeaders(extra = {}) {
  const token = storedToken();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : { ...extra };
}

let pendingAsk = null;

async function tokenAfter401(hadToken) {
  if (!askToken) throw new ApiError(401, "UNAUTHORIZED", "An API token is required", {});
  if (hadToken) forgetToken();
  pendingAsk = pendingAsk || askToken(hadToken).finally(() => { pendingAsk = null; });
  const token = await pendingAsk;
  localStorage.setItem(TOKEN_KEY, token);
}

async function errorFrom(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON */ }
  const error = body && body.error ? body.error : {};
  return new ApiError(response.status, error.code || `HTTP_${response.status}`,
    error.message || response.statusText || "Request failed", error.details);
}

/** fetch() with the token; retries once after asking for a token on 401. Returns the Response. */
export async function send(path, options = {}) {
  for (let attempt = 0; ; attempt++) {
    const hadToken = Boolean(storedToken());
    const response = await fetch(path, { ...options, headers: authHeaders(options.headers || {}) });
    if (response.status === 401 && attempt < 3) {
      await tokenAfter401(hadToken);
      continue;
    }
    if (!response.ok) throw await errorFrom(response);
    return response;
  }
}

/** JSON API call: `api("/api/projects")`, `api(path, {method: "POST", json: {...}})`; resolves to `data`. */
export async function api(path, { method = "GET", json, body, signal, headers } = {}) {
  const options = { method, signal, headers: { Accept: "application/json", ...(headers || {}) } };
  if (json !== undefined) {
    options.body = JSON.stringify(json);
    options.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    options.body = body;
  }
  const response = await send(path, options);
  const envelope = await response.json();
  return envelope.data;
}

/** Query string from an object, skipping empty values. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/** Path segment, escaped (filenames may hold spaces, `#`, `?` or `/`). */
export function seg(value) {
  return encodeURIComponent(value);
}

/**
 * Upload with progress (fetch has no upload progress; XMLHttpRequest does).
 * `onProgress(loaded, total)`; resolves to the envelope's `data`, rejects with ApiError.
 */
export function upload(path, formData, onProgress, { signal } = {}) {
  const attempt = () => new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", path);
    for (const [key, value] of Object.entries(authHeaders({ Accept: "application/json" }))) {
      request.setRequestHeader(key, value);
    }
    request.upload.onprogress = (event) => onProgress && onProgress(event.loaded, event.total);
    request.onerror = () => reject(new ApiError(0, "NETWORK_ERROR", "The upload failed: the server could not be reached", {}));
    request.onabort = () => reject(new ApiError(0, "ABORTED", "The upload was cancelled", {}));
    request.onload = () => {
      let body = null;
      try { body = JSON.parse(request.responseText); } catch { /* not JSON */ }
      if (request.status >= 200 && request.status < 300) { resolve(body ? body.data : null); return; }
      const error = body && body.error ? body.error : {};
      reject(new ApiError(request.status, error.code || `HTTP_${request.status}`, error.message || "Upload failed", error.details));
    };
    if (signal) signal.addEventListener("abort", () => request.abort(), { once: true });
    request.send(formData);
  });
  return attempt().catch(async (error) => {
    if (error.status !== 401) throw error;
    await tokenAfter401(Boolean(storedToken()));
    return attempt();
  });
}

// Images need the token too, so they are fetched and shown as blob: URLs (kept in a small LRU cache).
const blobCache = new Map();
const BLOB_CACHE_SIZE = 600;

/** A blob: URL for an image endpoint (thumbnail or full image), fetched with the token. */
export async function imageUrl(path, { signal } = {}) {
  const cached = blobCache.get(path);
  if (cached) {
    blobCache.delete(path);
    blobCache.set(path, cached);
    return cached;
  }
  const response = await send(path, { signal });
  const url = URL.createObjectURL(await response.blob());
  blobCache.set(path, url);
  while (blobCache.size > BLOB_CACHE_SIZE) {
    const [oldest, oldUrl] = blobCache.entries().next().value;
    blobCache.delete(oldest);
    URL.revokeObjectURL(oldUrl);
  }
  return url;
}

/** Download a file endpoint with the token and hand it to the browser under `filename`. */
export async function download(path, filename) {
  const response = await send(path);
  const blob = await response.blob();
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition);
  const name = filename || (match ? decodeURIComponent(match[1]) : "download");
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  return { name, size: blob.size };
}

let openApiDocument = null;

/** The OpenAPI document (schemas for forms: experiment config, options); fetched once. */
export async function openApi() {
  if (!openApiDocument) {
    const response = await send("/schema/openapi.json", { headers: { Accept: "application/json" } });
    openApiDocument = await response.json();
  }
  return openApiDocument;
}
