// Package codecheck holds tests that keep the code base within its
// standards; it has no code of its own.
package codecheck
