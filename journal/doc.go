// Package journal is mrbacd's journal: by default one SQLite file
// (modernc.org/sqlite, pure Go) in WAL mode that survives crashes and may be
// shared by two processes on one host (the daemon and a one-shot command, or
// two daemons); or a PostgreSQL database (package journal/postgres) shared by
// daemons and gateways on several hosts. Both run the same queries through
// *DB (see Dialect); package journal/backend opens the one a config names and
// package journal/journaltest is the contract both meet.
//
// It holds:
//
//   - rotations, one row per rotation attempt, with the step reached, the old
//     and new key ids, the store version and the durable propagation deadline
//     (BeginRotation, UpdateRotation, InFlightRotations, Rotation,
//     RotationsForKey, RecentRotations, LastDoneRotation). At most one
//     in-flight rotation per key is enforced by a UNIQUE partial index, so two
//     processes cannot both begin (ErrRotationInFlight);
//   - leases, a cross-process mutex with a TTL per name (AcquireLease,
//     RenewLease, ReleaseLease, LeaseHolder), so one key never rotates twice
//     at once;
//   - fenced leases for leader election (AcquireFenced, RenewFenced,
//     ReleaseFenced, FencedHolder): each tenure has a token greater than every
//     earlier one, and a write made under WithFence is checked against it in
//     the same transaction and refused (ErrFenced) once the tenure is over;
//   - job runs, with who asked (cron, cli, uid:N), arguments, result and a JSON
//     summary (StartRun, FinishRun, Runs, GetRun, LastRun, AbandonRuns);
//   - the scheduler's last fire per job, for catch-up (SetLastFire, LastFire);
//   - findings already reported, synced per scope into new / persisting /
//     resolved in one transaction (SyncFindings, MarkFindingsReported,
//     OpenFindings);
//   - once-marks for alert dedupe (MarkOnce);
//   - the notification outbox (Enqueue with unique Dedupe; Claim, which
//     leases due messages so two workers never send the same one and flags
//     InDoubt the ones whose previous attempt has no recorded outcome;
//     MarkSent, MarkRetry, MarkUncertain, MarkDead, Requeue; Due, NextDue,
//     PendingCount, Message, Messages). Package notify drives it;
//   - gateway usage counters per (subject, window) (AddUsage, Usage, LoadUsage)
//     and the slices of their budgets leased to gateway instances, granted in
//     one transaction that keeps the counter plus every grant within the
//     limit (LeaseBudget, BudgetGrants, BudgetUsed);
//   - retention (Prune) and compaction (Vacuum).
//
// # Never a key's plaintext
//
// No method takes key material: rotations store key ids, key names and store
// versions only; outbox payloads are built by package notify from names, ids and
// hidden_key. A test scans the database, WAL and shared-memory files for the
// plaintext used in a rotation-like sequence.
//
// # Schema and portability
//
// Migrations are a list in code (migrations.go); schema_version records the
// applied ones and each runs in its own transaction, so reopening is idempotent
// and two processes opening a fresh file concurrently apply each migration once.
// The queries are portable: ? placeholders (rebound to $n on PostgreSQL),
// INSERT ... ON CONFLICT (DO NOTHING / DO UPDATE ... WHERE), RETURNING,
// partial unique indexes, substr, BIGINT times stored as Unix nanoseconds
// (0 = unset), UTC, read from the journal's clock (every process sharing a
// journal must keep its clock in sync well within a lease's third). What
// differs is a Dialect: each engine's schema history (the same versions), its
// unique-violation check, its transactions (SQLite: BEGIN IMMEDIATE, serial;
// PostgreSQL: SERIALIZABLE, retried on a lost race, with the fence's lease row
// locked FOR SHARE) and the errors after which a statement or a transaction
// is run again because the server ended the session before doing it (a
// PostgreSQL restart is ridden over without restarting mrbacd). Vacuum and
// OpenReadOnly are SQLite-only.
//
// # Findings and exactly-once reporting
//
// SyncFindings keeps a finding in New until MarkFindingsReported records it,
// and a resolution in Resolved until likewise marked; so the audit job syncs,
// enqueues its notifications (whose Dedupe ids make a repeat a no-op), then
// marks. A crash anywhere in between repeats work, never loses a report, and
// never sends one twice.
//
// # Concurrency
//
// Every transaction begins IMMEDIATE (the write lock is taken up front), which
// with busy_timeout avoids the SQLITE_BUSY deadlock of upgrading a read
// transaction; readers never block in WAL mode. synchronous=FULL: a commit that
// returned survives power loss, which the rotation protocol relies on.
package journal
