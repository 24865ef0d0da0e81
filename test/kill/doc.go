// Package kill holds the rotation kill test: the built mrbacd binary runs
// `rotate --force` as a child process and is SIGKILLed at random moments,
// then restarted, while an independent checker watches the secret store and
// the sandbox platform and asserts the rotation invariants I1–I4 (see the
// protocol in package rotate, jobs/rotate/doc.go). The checker shares no code with the engine beyond the store and
// sandbox clients. MRBACD_KILLS sets the number of kills (default 54, spread
// over the file, Vault and AWS stores). Each store holds three managed keys:
// two in the JSON value format and one in the raw format, whose metadata
// Vault and AWS write in requests of their own.
package kill
