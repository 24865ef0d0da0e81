// Package gateway is mrbacd's role-enforcing HTTP proxy in front of Mistral.
//
// It speaks Mistral's own inference API (/v1/chat/completions, plain and
// streaming; /v1/embeddings; /v1/models), so an application only changes its
// base URL and its token. Each request is authenticated by its bearer token
// (hashed with SHA-256 and looked up; the token itself is never kept nor
// logged), held to its client's role (allowed models, max_tokens per
// request, daily tokens, requests per minute, hourly and daily USD) and to
// its workspace's limits (allowed models, requests per minute for the whole
// workspace; the Mistral API cannot restrict a workspace's models, so the
// gateway does) and forwarded with the managed key of the client's workspace, read from the
// secret store that rotation writes.
//
// # Upstream keys
//
// A client's workspace selects the upstream key: the first `keys:` entry of
// the config whose workspace matches. The key is cached; a poller compares
// the store's current version every KeyPollInterval and re-reads on change,
// and an upstream 401 re-reads the store at once and retries the request
// once, so a rotation (new key published, old key revoked after the
// propagation wait) fails no request.
//
// # Accounting
//
// Before forwarding, the gateway reserves the request's worst case against
// the client's windows: the estimated prompt tokens (the request body's
// length in bytes, an upper bound for byte-level tokenizers since every token
// covers at least one byte and the JSON syntax outweighs the per-message
// control tokens) plus max_tokens, and the USD of that at the model's price.
// A request that does not fit is refused with 429 and Retry-After: the time
// until every exhausted limit frees (the window's end, or a second when only
// requests in flight hold the room). After the answer the reservation is
// settled to the real usage (the body's usage, or the last streamed chunk's);
// a failed, cancelled or panicking request releases it. So the admitted total
// never exceeds a budget, whatever the concurrency.
// Windows roll over at UTC midnight (daily tokens and USD) and at the hour
// (hourly USD); rpm is a sliding minute.
//
// Counters live in memory on the hot path and are written behind to the
// journal (UsageStore) every FlushInterval and at Close; at start the current
// windows are loaded, so a restart forgets at most one flush interval (and
// nothing after a graceful stop). After each flush the windows are re-read
// from the journal, so gateways scaled out on one journal share the token
// and USD budgets (each learns of the others' spending within a flush
// interval; rpm stays per instance).
//
// rpm counts chat and embeddings requests admitted in the last 60 seconds;
// /v1/models is not counted. There are two rpm limits, checked in the same
// reservation: the role's, per client, and the workspace's (`workspaces:`
// rpm), one sliding minute shared by every client of the workspace. Both
// are per gateway instance: they live in memory only, so N instances admit
// up to N times the configured rpm. Both count admissions: a request
// refused by another limit takes no slot, while one admitted and then
// failed or cancelled keeps its slot for the minute. A role with a budget but no
// max_tokens_per_request refuses chat requests without max_tokens (400),
// since their cost could not be bounded; a role with a USD guard refuses
// models without a known price (403).
//
// # Request parsing
//
// A chat or embeddings body must be valid JSON (400 otherwise) and is then
// scanned, not decoded, for its top-level model, max_tokens and stream; the
// rest goes upstream byte for byte (when the role's max_tokens is injected,
// it is inserted after the opening brace, or the object re-encoded when
// max_tokens was null). Keys are matched
// exactly after unescaping ("max_\u0074okens" is max_tokens). A key that
// differs from one of the three only in case ("Model", "MAX_TOKENS"), or
// one of the three given twice, is refused with 400: JSON parsers disagree
// on such bodies (encoding/json matches keys case-insensitively and keeps
// the last duplicate, others match exactly or keep the first), and the
// gateway must check the very model and max_tokens the upstream will use.
// max_tokens 0 is refused with 400 too: the platform does not document what
// 0 means, and were it "no limit" the gateway could not bound the answer.
// The usage of an answer is read from its last "usage" object, scanned
// without decoding the answer (encoding/json decodes it when it is anything
// but flat integers).
//
// # Reload
//
// Gateway.Reload swaps clients, roles, workspace limits (models and rpm),
// prices, key locations and the body limit while serving (for SIGHUP):
// clients keep their counters by name, workspaces keep their rpm window by
// name (restarted when the rpm changes) and their cached key when its
// location is unchanged, and a failed reload changes nothing.
//
// # Authorization
//
// A model must be allowed by the client's role and, when the workspace
// lists models (same patterns: a name, "*" or "prefix*"), by the workspace;
// a refusal is 403 model_not_allowed whose message names the role or the
// workspace that refused it. /v1/models lists only models both allow.
//
// The decision token → principal → model and max_tokens check
// (Gateway.authorize) allocates nothing: principals sit in a map keyed by the
// token's SHA-256, confirmed with a constant-time compare, and each role's
// and workspace's model patterns are compiled into an exact set, a prefix
// list and an allow-all flag.
package gateway
