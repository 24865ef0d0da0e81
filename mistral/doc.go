// Package mistral is the HTTP client for the Mistral AI platform: the admin
// API (API keys, workspaces, users, usage, spend limit, rate limit, audit
// logs) and inference (models, chat completions plain and streaming,
// embeddings), as Mistral's published OpenAPI spec describes them (see
// package contract). Every paged listing is read until a page comes back
// empty, since a server may serve fewer items than asked.
//
// Errors from the platform are *APIError values that callers branch on with
// errors.Is (ErrUnauthorized, ErrForbidden, ErrNotFound, ErrValidation,
// ErrRateLimited, ErrServer) or Retryable. Requests are retried with bounded
// exponential backoff and full jitter on 429, 5xx, timeouts and connection
// errors, honouring Retry-After when the server sends it.
//
// Key material never leaves through an error, a log line or fmt: keys are
// carried as Secret, which redacts itself, and the client neither echoes
// request bodies nor keeps response text that could hold a key.
package mistral
