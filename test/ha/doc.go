// Package ha holds the high-availability tests of mrbacd: several daemons
// (the real binary, `mrbacd run`) on one PostgreSQL journal, one leading.
//
// TestChaosHA SIGKILLs the leader during forced rotations, restarts it each
// time, and checks with an independent poller (it reads the secret store,
// the sandbox platform and the journal's tables itself, sharing no code
// with the engine) that the rotation invariants I1–I4 hold (see
// jobs/rotate/doc.go), that no key is rotated twice (no two rotations of a
// key overlap, no rotation's key is created again once a later rotation of
// that key began, never two live keys of one name), and that each kill is
// followed by a standby taking over; it reports the fail-over time (kill to
// the standby saying it leads) at p50 and max. MRBACD_HA_KILLS sets the
// number of kills (default 10; `make chaos-ha` runs 50).
//
// TestPausedLeader SIGSTOPs the leader in a rotation's propagation wait:
// the standby takes over within the lease and finishes the rotation; woken
// with SIGCONT, the old leader's late journal writes are refused.
//
// TestPostgresRestartDuringRotation ends every session of the journal's
// database every 300 ms during a forced rotation (as restarts of the
// server would): the run completes without restarting mrbacd, one rotation
// per key is journaled and never restarted, the platform sees one key
// created per managed key and each old key revoked once, and the daemon's
// log has a WARN line for each recovery.
package ha
