package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// maxSecretFile bounds a secret file's size.
const maxSecretFile = 64 << 10

// ResolveSecret reads a secret from the environment variable envName or,
// when envName is empty, from the file fileName, trimmed of surrounding
// white space. Errors name the variable or the file, never the value.
//
// A name or path that looks like a secret itself (a key pasted into the
// field by mistake) is refused without being quoted.
func ResolveSecret(envName, fileName string) (string, error) {
	switch {
	case looksLikeSecret(envName, false):
		return "", errors.New("secret: the environment variable name looks like a secret itself; give the variable's name (the value is not shown)")
	case looksLikeSecret(fileName, true):
		return "", errors.New("secret: the file name looks like a secret itself; give the path of a file holding it (the value is not shown)")
	case envName != "" && fileName != "":
		return "", fmt.Errorf("secret: both environment variable %s and file %s are set; use one", envName, fileName)
	case envName != "":
		v := strings.TrimSpace(os.Getenv(envName))
		if v == "" {
			return "", fmt.Errorf("secret: environment variable %s is not set or empty", envName)
		}
		return v, nil
	case fileName != "":
		f, err := os.Open(fileName)
		if err != nil {
			return "", fmt.Errorf("secret: %w", err)
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
		if err != nil {
			return "", fmt.Errorf("secret: read %s: %w", fileName, err)
		}
		if len(b) > maxSecretFile {
			return "", fmt.Errorf("secret: file %s is larger than %d bytes", fileName, maxSecretFile)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("secret: file %s is empty", fileName)
		}
		return v, nil
	}
	return "", errors.New("secret: no environment variable or file given")
}
