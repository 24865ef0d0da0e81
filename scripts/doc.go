// Package scripts holds the tests of the set-up scripts in this directory:
// each is run as on a fresh machine, against an empty tool cache, with a
// stand-in toolchain (see scripts_test.go).
package scripts
