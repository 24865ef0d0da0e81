package file

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/mrbacd/mrbacd/secrets"
)

// The store reaches its files through directory descriptors: each element
// of a record's path is opened relative to its parent with O_NOFOLLOW, so
// a symlink planted anywhere below the store's directory is never followed
// (not only the last element, and with no window between a check and the
// use); a record file is opened O_NONBLOCK, so a FIFO put in its place
// cannot block the daemon, and must then be a regular file. A directory
// that users other than the owner can write is refused: whoever can write
// it can replace a record.

// errUnsafe is a store file or directory refused by these rules.
var errUnsafe = secrets.ErrPermissionDenied

// checkDirMode refuses a directory others can write.
func checkDirMode(name string, st *syscall.Stat_t) error {
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return fmt.Errorf("%w: %s is not a directory", errUnsafe, name)
	}
	if st.Mode&0o022 != 0 {
		return fmt.Errorf("%w: directory %s is writable by group or others (mode %#o); make it 0700", errUnsafe, name, st.Mode&0o777)
	}
	return nil
}

// checkRootDir refuses a store directory that others can write.
func checkRootDir(abs string) error {
	var st syscall.Stat_t
	if err := syscall.Stat(abs, &st); err != nil {
		return classify(&os.PathError{Op: "stat", Path: abs, Err: err})
	}
	return checkDirMode(abs, &st)
}

// openDirs opens the directory root/elems... without following symlinks
// below root, creating missing elements (mode 0700) when create is set. It
// returns the directory's descriptor; (-1, nil) when an element is missing
// and create is not set.
func openDirs(root string, elems []string, create bool) (int, error) {
	fd, err := syscall.Open(root, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return -1, classify(&os.PathError{Op: "open", Path: root, Err: err})
	}
	name := root
	for _, el := range elems {
		name = filepath.Join(name, el)
		next, err := syscall.Openat(fd, el, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
		if errors.Is(err, syscall.ENOENT) && create {
			if err = syscall.Mkdirat(fd, el, dirMode); err == nil || errors.Is(err, syscall.EEXIST) {
				next, err = syscall.Openat(fd, el, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
			}
		}
		syscall.Close(fd)
		switch {
		case errors.Is(err, syscall.ENOENT) && !create:
			return -1, nil
		case errors.Is(err, syscall.ELOOP), errors.Is(err, syscall.ENOTDIR):
			return -1, fmt.Errorf("%w: %s is a symlink or not a directory", errUnsafe, name)
		case err != nil:
			return -1, classify(&os.PathError{Op: "open", Path: name, Err: err})
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(next, &st); err != nil {
			syscall.Close(next)
			return -1, classify(&os.PathError{Op: "stat", Path: name, Err: err})
		}
		if err := checkDirMode(name, &st); err != nil {
			syscall.Close(next)
			return -1, err
		}
		fd = next
	}
	return fd, nil
}

// splitRecord splits a validated target path into its directories and the
// record file's name.
func splitRecord(p string) (dirs []string, base string) {
	els := strings.Split(p, "/")
	return els[:len(els)-1], els[len(els)-1] + ext
}

// openRecord opens the record file of target path p for reading: no
// symlink followed, no blocking on a FIFO, a regular file only. (nil, nil)
// when it does not exist.
func (s *Store) openRecord(p string) (*os.File, error) {
	dirs, base := splitRecord(p)
	dfd, err := openDirs(s.dir, dirs, false)
	if err != nil || dfd < 0 {
		return nil, err
	}
	defer syscall.Close(dfd)
	fd, err := syscall.Openat(dfd, base, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, syscall.ENOENT):
		return nil, nil
	case errors.Is(err, syscall.ELOOP):
		return nil, fmt.Errorf("%w: the record file is a symlink", errUnsafe)
	case err != nil:
		return nil, classify(&os.PathError{Op: "open", Path: p, Err: err})
	}
	f := os.NewFile(uintptr(fd), filepath.Join(s.dir, filepath.FromSlash(p)+ext))
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, classify(err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%w: the record file is not a regular file (%s)", errUnsafe, st.Mode().Type())
	}
	return f, nil
}

// openLock opens (creating it) the lock file without following a symlink
// nor blocking on a FIFO.
func (s *Store) openLock() (*os.File, error) {
	name := filepath.Join(s.dir, lockName)
	fd, err := syscall.Open(name, syscall.O_RDWR|syscall.O_CREAT|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY|syscall.O_CLOEXEC, fileMode)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("%w: the lock file %s is a symlink", errUnsafe, name)
	}
	if err != nil {
		return nil, classify(&os.PathError{Op: "open", Path: name, Err: err})
	}
	f := os.NewFile(uintptr(fd), name)
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%w: the lock file %s is not a regular file", errUnsafe, name)
	}
	return f, nil
}
