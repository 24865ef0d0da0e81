package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// badDuration does not echo the value: a misplaced secret must not leak.
const badDuration = "invalid duration: use a number and a unit, e.g. 90d, 36h, 60s"

// Day is 24 hours, the unit of the "d" suffix.
const Day = 24 * time.Hour

// ParseDuration parses a Go duration ("36h", "1m30s") that may start with a
// number of days ("90d", "1d12h", "1.5d").
func ParseDuration(s string) (time.Duration, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, errors.New("empty duration")
	}
	neg := false
	rest := in
	if rest[0] == '-' || rest[0] == '+' {
		neg = rest[0] == '-'
		rest = rest[1:]
	}
	var total time.Duration
	if i := strings.IndexByte(rest, 'd'); i >= 0 {
		days, err := strconv.ParseFloat(rest[:i], 64)
		if err != nil || i == 0 || strings.ContainsAny(rest[:i], "eEinfINFxX_") || days < 0 {
			return 0, errors.New(badDuration)
		}
		if days > float64(math.MaxInt64)/float64(Day) {
			return 0, errors.New("duration too long")
		}
		total = time.Duration(days * float64(Day))
		rest = rest[i+1:]
		if rest == "" {
			if neg {
				total = -total
			}
			return total, nil
		}
		if rest[0] == '-' || rest[0] == '+' {
			return 0, errors.New(badDuration)
		}
	}
	d, err := time.ParseDuration(rest)
	if err != nil {
		return 0, errors.New(badDuration)
	}
	if d > math.MaxInt64-total {
		return 0, errors.New("duration too long")
	}
	total += d
	if neg {
		total = -total
	}
	return total, nil
}

// UnmarshalYAML decodes a scalar like "90d", "36h" or "60s".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("expected a duration such as 90d or 60s, got %s", kindName(n))
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// String formats whole days as "Nd" and anything else as time.Duration does.
func (d Duration) String() string {
	td := time.Duration(d)
	if td != 0 && td%Day == 0 {
		return strconv.FormatInt(int64(td/Day), 10) + "d"
	}
	return td.String()
}

// quoteShort quotes a user value for a message, cut to a short prefix.
func quoteShort(s string) string {
	const max = 32
	r := []rune(s)
	if len(r) > max {
		return strconv.Quote(string(r[:max])) + "..."
	}
	return strconv.Quote(s)
}
