package browser

import "os"

// chromiumSocketSuffix is what Chromium adds under TMPDIR for the Unix
// socket it binds at start (process_singleton_posix.cc), and maxSocketPath
// the longest path a Unix socket may have (sun_path is 108 bytes with the
// final NUL).
const (
	chromiumSocketSuffix = "/org.chromium.Chromium.XXXXXX/SingletonSocket"
	maxSocketPath        = 107
)

// MkdirTemp makes a folder to give Chromium and the driver as their TMPDIR:
// in os.TempDir(), or in /tmp when that would be too deep for Chromium. A
// Chromium whose TMPDIR is longer than 62 bytes exits at start ("Socket
// path too long"), so every launch would fail. The caller removes the
// folder. fellBack tells that the folder is not in os.TempDir().
func MkdirTemp(pattern string) (dir string, fellBack bool, err error) {
	dir, err = os.MkdirTemp("", pattern)
	if err != nil || TempDirFits(dir) {
		return dir, false, err
	}
	os.Remove(dir)
	dir, err = os.MkdirTemp("/tmp", pattern)
	return dir, true, err
}

// TempDirFits reports whether Chromium can start with dir as its TMPDIR.
func TempDirFits(dir string) bool {
	return len(dir)+len(chromiumSocketSuffix) <= maxSocketPath
}
