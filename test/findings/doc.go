// Package findings holds the end-to-end tests of "findings to on-call": the
// audit and budget jobs run against the Mistral sandbox, the file store and
// the journal, and their notifications travel through the durable outbox to
// a slacktest server, night after night. The tests check that the messages
// name exactly the expected findings, that persisting findings are not
// re-sent in full, that a resolved finding is announced once, and that no key
// plaintext appears in any Slack payload or log line.
package findings
