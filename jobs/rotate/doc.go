// Package rotate is mrbacd's rotation engine: it replaces each managed key's
// platform key on time, with no outage, and survives being killed at any
// instant.
//
// # Protocol
//
// One rotation of one managed key moves through journaled steps (the journal
// is package journal; the step names below are what its Step column holds):
//
//	begin    journal the rotation id, the old key id and the deterministic new
//	         key name <name>-<yyyymmdd>-<first 8 hex of the rotation id>
//	create   POST the new key with an expiration of today + rotate_every +
//	         expiration_grace (a backstop), journal its id, then list keys by
//	         the new name and delete any duplicate (a create retried after a
//	         lost answer can leave one)
//	verify   GET /v1/models with the new key, with backoff up to verify_timeout
//	         (not journaled, see below)
//	publish  write the record to the store with compare-and-set on the version
//	         read before begin (Token = rotation id, suffixed ".N" for the Nth
//	         re-created attempt); journal the version and the durable
//	         propagation deadline in one journal write (the "propagate" phase
//	         is that deadline: a restart waits only what is left of it)
//	reverify read the store back (it must still hold the new key) and
//	         GET /v1/models with what it holds
//	done     delete the old key (404 counts as done); if the rotation was
//	         resumed or re-created, list keys by the new name once more and
//	         delete strays (a create request of a killed process can land
//	         after recovery looked; the propagation wait gives it time to);
//	         journal done, notify
//	abort    a failure before publish: delete the new key (by id and by
//	         name), journal failed, notify; the old key was never touched
//
// The plaintext of a new key exists only in this process's memory until the
// store holds it, so recovery of a rotation journaled at begin, create or
// verify first reads the store: if it already holds the new key id, the publish
// happened (the crash came before its journal write) and the rotation goes on
// at propagate with a full wait; otherwise every platform key with the new
// name is deleted and the rotation starts over at create under the same id
// and name (Attempts counts these restarts). A rotation at publish resumes
// the remaining wait; at reverify (journaled only with a failure after it,
// such as a refused revoke) it re-verifies, then revokes; at abort it deletes
// again.
//
// A failure after publish never rolls the store back: the rotation stays in
// flight with its error (reported as failed in this run and to the
// notifier) and the next run retries it. If the store no longer holds the new
// key at reverify, someone else wrote it (an operator rollback, say): the old
// key is then not revoked and the rotation ends failed.
//
// Publish retries an unavailable store with backoff up to publish_timeout.
// Then it reads the store back: if the store shows our key the write landed;
// if it shows anything else the rotation aborts cleanly (new key deleted, old
// key untouched); if even the read fails, nobody can tell whether the write
// landed, so nothing is deleted: the rotation stays in flight and the next run
// decides from what the store shows. The old key is valid throughout.
//
// # Invariants
//
// I1 (no outage): the store only ever receives a key verified beforehand, and
// the key it replaced is deleted only after the new one is re-verified.
// I2 (no orphan): every key mrbacd creates carries the deterministic name
// journaled before the create call, so recovery and abort find and delete it
// by name even when its id never reached the journal. I3 (revoke last): the
// old key is deleted only at step done, after publish and reverify. I4 (no
// leak): the journal holds ids, names and versions only; logs carry
// key_name, rotation_id, old_key_id, new_key_id and step; errors from the
// platform client are scrubbed by package mistral, and keys are carried as
// mistral.Secret, which redacts itself.
//
// Residual risks, by design: a create request of a killed process that the
// platform applies later than the propagation wait after the restart leaves
// a stray key (the audit's undeclared-key finding reports it); a store write
// of a killed process applied after the restarted process read the store
// would publish a key recovery already deleted (a store applies a write in
// milliseconds, a restart takes longer). Raw-format records in Vault and AWS
// write the record's metadata, keyed by the coming version, before the
// value, so a crash between the two leaves the old record readable (see
// secrets/vault and secrets/awssm); only a raw record half-written by an
// older mrbacd, which wrote the value first, stays unreadable until a write
// completes it, and the rotation then stays in flight, revoking nothing.
//
// # Due keys, bootstrap and adoption
//
// A key is due when its current key's age reaches rotate_every. The age comes
// from the store record's created_at, else from the platform key's
// created_at (found by the record's key_id). A managed key whose store holds
// no record is bootstrapped: created, verified, published, nothing revoked.
// A record mrbacd did not write (no rotation_id) is adopted and rotated like
// any other; its old key is the record's key_id. A record with no key_id is
// matched against the platform keys of the key's workspace by hidden_key
// (the platform's "ABCD...WXYZ" prefix and suffix of the plaintext): exactly
// one match is taken as the old key; none or several, and the rotation goes
// on but revokes nothing, saying so in the report (guessing could revoke a
// key someone else still uses). A key whose age cannot be known is due.
//
// # Concurrency
//
// Run drives each key's rotation as a small state machine on a goroutine of
// its own. What the concurrency bound protects is API work, so it is applied
// there: at most Options.Concurrency calls run at once against the platform,
// and as many against each store (writes to the file store, which takes one
// lock per write, one at a time); journal writes of the engine go one at a
// time (SQLite has one writer anyway). A rotation parked in its propagation
// wait holds none of these: it sleeps until the journaled deadline. Rotating
// N keys with wait W therefore takes about W plus the API and journal time of
// N rotations, not N×W/C (see BenchmarkRotate200).
//
// One key never rotates twice at once. The journal refuses a second in-flight
// rotation of a key (a unique index shared by every process on the journal);
// a process runs rotations only while it holds the journal lease LeaseName
// (renewed every third of Options.LeaseTTL), so two processes never resume
// the same rotation; and within a process, runs claim the keys they work on.
// A lease left by a killed process of this host (its pid no longer exists) is
// taken over at once; any other must expire. A process that finds the lease
// held by a live one reports every key busy and does nothing. A process that
// cannot renew its lease (the journal erring) for two thirds of its TTL stops
// its run, as one that lost it does, before another may take it over.
//
// The verify and reverify steps are not journaled (except along with a
// failure after them): recovery treats begin, create and verify alike, and
// a restart after reverify re-verifies, which is cheap. Journal writes per rotation: begin, create, publish, done.
//
// On context cancellation a rotation stops before its next step; it stays
// journaled and the next start resumes it.
package rotate
