package file

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// OpenExisting returns a store rooted at the existing directory dir for
// commands that must change nothing (mrbacd plan): unlike New it creates no
// directory and removes no stale temporary file. A missing directory is an
// error wrapping fs.ErrNotExist. Reads take no lock; a Write through the
// store works as with New.
func OpenExisting(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("file store: directory is empty")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("file store: %w", err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("file store: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("file store: %s is not a directory", abs)
	}
	if err := checkRootDir(abs); err != nil {
		return nil, fmt.Errorf("file store: %w", err)
	}
	return &Store{dir: abs}, nil
}
