package daemon

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// LevelEnv overrides log.level.
const LevelEnv = "MRBACD_LOG_LEVEL"

// NewLogger returns a slog logger writing format ("text" or "json") to w at
// level (debug, info, warn, error; $MRBACD_LOG_LEVEL wins over it). The
// returned LevelVar lets a reload change the level.
func NewLogger(w io.Writer, format, level string) (*slog.Logger, *slog.LevelVar, error) {
	lv := new(slog.LevelVar)
	if err := SetLevel(lv, level); err != nil {
		return nil, nil, err
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), lv, nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), lv, nil
	default:
		return nil, nil, fmt.Errorf("log format %q: want text or json", format)
	}
}

// SetLevel sets lv from level, unless $MRBACD_LOG_LEVEL is set.
func SetLevel(lv *slog.LevelVar, level string) error {
	src := "log.level"
	if env := os.Getenv(LevelEnv); env != "" {
		level, src = env, LevelEnv
	}
	if level == "" {
		level = "info"
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("%s %q: want debug, info, warn or error", src, level)
	}
	lv.Set(l)
	return nil
}
