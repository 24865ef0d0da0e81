package notify

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
)

// Stdout is a Sender writing readable text, for the demo and for
// deployments without Slack.
type Stdout struct {
	mu sync.Mutex
	w  io.Writer
}

// NewStdout returns a Sender writing to w (os.Stdout in the demo).
func NewStdout(w io.Writer) *Stdout { return &Stdout{w: w} }

// Send writes n as a block of text. Write errors are retryable.
func (s *Stdout) Send(_ context.Context, n Notification) error {
	var b strings.Builder
	fmt.Fprintf(&b, "[%s] %s: %s\n", strings.ToUpper(n.Severity.String()), n.Kind, n.Title)
	for _, f := range n.Fields {
		fmt.Fprintf(&b, "  %s: %s\n", f.Label, f.Value)
	}
	for _, sec := range n.Sections {
		if sec.Title != "" {
			fmt.Fprintf(&b, "  %s\n", sec.Title)
		}
		for _, l := range sec.Lines {
			fmt.Fprintf(&b, "    - %s\n", l)
		}
	}
	if len(n.Fields) == 0 && len(n.Sections) == 0 && n.Text != "" && n.Text != n.Title {
		for _, l := range strings.Split(n.Text, "\n") {
			fmt.Fprintf(&b, "  %s\n", l)
		}
	}
	if n.Context != "" {
		fmt.Fprintf(&b, "  (%s)\n", n.Context)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := io.WriteString(s.w, b.String()); err != nil {
		return fmt.Errorf("stdout notifier: %w", err)
	}
	return nil
}
