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
// Mistral bills a request once it has accepted it and starts generating,
// whether or not the client stays; the gateway counts the same way.
// Before forwarding, it reserves the request's worst case against the
// client's windows: the estimated prompt tokens (the request body's length
// in bytes, an upper bound for byte-level tokenizers since every token
// covers at least one byte and the JSON syntax outweighs the per-message
// control tokens) plus n × max_tokens (n, the number of completions, is
// the spec's only multiplier of output; embeddings have no output), and the
// USD of that at the model's price. max_tokens_per_request bounds
// n × max_tokens: a request over it is refused with 403 naming the limit
// before anything is sent upstream (when max_tokens is absent, the role's
// maximum divided by n is injected). A request that does not fit a window
// is refused with 429 and Retry-After: the time until every exhausted
// limit frees (the window's end, or a second when only requests in flight
// hold the room).
//
// Once the upstream may have accepted a request (it answered 2xx, or the
// connection failed after it was made: the request may have been written)
// its reservation is never released. It settles to the usage the upstream
// reports (the answer's usage, or the last streamed chunk's), pricing
// cached prompt tokens (usage.prompt_tokens_details.cached_tokens) at
// CachedInputFactor (10%) of the input price in the USD counted, the
// spending guards and the metrics. When the client hangs up (or stops
// reading for ReadTimeout), the upstream call is not cancelled: the rest of
// the answer is read without relaying, for at most HangupDrainTimeout and
// 64 MiB, to learn that usage. When it cannot be learnt (the answer broke,
// a bound passed, a panic) the whole reservation is charged. Only a request
// the upstream certainly never accepted releases its reservation: an
// upstream error status, no connection (dial or DNS failure), no key.
// Requests still in flight when the gateway closes are charged in full.
//
// The promise, against an upstream that bills on acceptance: for each
// client, what the gateway counts is at least what the upstream billed
// (the usage it reported, or the reservation, which bounds it: the prompt
// estimate is at least the prompt tokens and n × max_tokens at least the
// completion tokens), and any number of gateway instances sharing a
// journal (SQLite or PostgreSQL) never count more than a daily or hourly
// budget together, nor admit more than a role's or a workspace's rpm per
// UTC minute together: each admits a request only out of budget it holds
// on lease from the journal (below), and a request settles to at most its
// reservation. Without a journal (Options.Usage nil) the same holds for
// the one instance, in memory only.
// Windows roll over at UTC midnight (daily tokens and USD) and at the hour
// (hourly USD); rpm is a sliding minute per instance and, across instances,
// a UTC minute.
//
// # Budget leases
//
// With a journal, every limited budget of a window (a client's daily
// tokens and USD, its hourly USD, its rpm minute, its workspace's rpm
// minute) is leased: the journal grants an instance a slice of it in one
// transaction that checks the window's counter plus every instance's grant
// against the limit (journal.DB.LeaseBudget: serializable on PostgreSQL,
// the single writer on SQLite). A request draws its worst case from the
// instance's holding, in memory; what it does not spend goes back to the
// holding when it settles. The instance fetches more in the background
// when a holding falls below half its target (one fetch in flight per
// holding), sized to its traffic: a target starting at four requests'
// worth, doubled when the holding drains again within a flush interval,
// set each interval to twice what was drawn in the last one (halving at
// most when the traffic drops), and at most an eighth of the budget (a
// quarter of an rpm) so that instances leave each other room. A request
// its holding does not cover waits for a fetch, at most LeaseWait (1s);
// the journal grants a fetch either at least the shortfall or nothing.
// Every FlushInterval each holding reports the usage settled (added to the
// counter and taken off its grant), renews its grant (LeaseTTL, 15s), and
// gives back what it holds beyond twice its target; a holding whose window
// ended gives all back. A graceful stop charges the requests still in
// flight in full, reports, and returns every remainder.
//
// A grant that is not renewed within LeaseTTL (the instance crashed, or
// lost the journal) is charged to the counter in full by the next grant on
// that budget: the journal cannot tell what the instance spent of it since
// its last report, and the upstream billed whatever it did. A crash thus
// never lets the others overspend; it costs the budget at most the unspent
// part of the crashed instance's holdings (a few seconds of its traffic),
// and the instance, should it come back, is told its grant was lost and
// starts afresh. Near the end of a budget the rest may sit in other
// instances' holdings: a request is then refused with Retry-After 1s (they
// give it back within a few idle intervals, or spend it), and with
// Retry-After until the window's end once the counter alone leaves no room.
//
// When the journal cannot be reached, an instance keeps serving from what
// it holds and refuses what it does not with 503 (code budget_unavailable,
// Retry-After 1s), logging that the journal is unreachable: it fails
// closed. It serves again as soon as a call succeeds, without a restart.
//
// # Hostile clients
//
// A request's headers must arrive within min(ReadTimeout, 10s) and its
// body within ReadTimeout (default 30s) of the handler's start, or the
// connection is cut (408); idle keep-alive connections close after twice
// ReadTimeout (a minute by default); headers are bounded to 64 KiB. An answer is never cut while it
// flows: each write has ReadTimeout to make progress, so only a client that
// stops reading is cut (and its request then settles as a hang-up). A
// role's max_concurrent caps each client's requests in flight (429
// max_concurrent); a request whose client hung up keeps its slot until its
// answer is read, so hang-ups cannot pile up. A body over the limit gets
// its 413, then up to 1 MiB of it is read and discarded (for at most two
// seconds) before the connection closes, so the client reads the answer
// rather than a reset. Upstream error bodies are relayed with the key sent
// and every key-looking token (mistral.ScrubKeyLike) replaced.
//
// Counters live in memory on the hot path and are written behind to the
// journal (UsageStore) every FlushInterval and at Close, through the
// leases for budgets and directly for clients without one; at start the
// current windows are loaded, and after each flush re-read (what the
// instance's ledger shows; the leases decide admission).
//
// rpm counts chat and embeddings requests admitted in the last 60 seconds;
// /v1/models is not counted. There are two rpm limits, checked in the same
// reservation: the role's, per client, and the workspace's (`workspaces:`
// rpm), one sliding minute shared by every client of the workspace. Each
// instance keeps both as a sliding minute; with a journal each also leases
// them per UTC minute, so N instances admit at most the configured rpm in
// any UTC minute together. Both count admissions: a request
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
