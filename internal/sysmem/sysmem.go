package sysmem

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Reading is one answer from Available.
type Reading struct {
	// Bytes is the memory available for new work.
	Bytes uint64
	// Source names what bounded Bytes: "meminfo", or a cgroup such as
	// "cgroup v2 /sys/fs/cgroup/kubepods/pod1" or
	// "cgroup v1 /sys/fs/cgroup/memory/docker/abc".
	Source string
}

// Reader reads memory figures from a file tree laid out like a Linux root.
// Tests point it at a fake tree; the zero value reads the real machine.
type Reader struct {
	// Root is the directory holding proc/ and sys/. The default, "", means "/".
	Root string
}

// Available reports the bytes of memory available for new work on this
// machine: see Reader.Available.
func Available() (Reading, error) {
	return Reader{}.Available()
}

// Available reports the bytes of memory available for new work: the least
// of the machine's MemAvailable (/proc/meminfo) and, for each cgroup limit
// that applies, the room left under it. Cgroup v2 limits are memory.max
// minus memory.current, and cgroup v1 limits memory.limit_in_bytes minus
// memory.usage_in_bytes, at each level from the process's cgroup up to the
// root of its mount; inactive file cache is not counted as used. Unlimited
// levels are skipped. On a tie, Source names meminfo over any cgroup, and
// an inner cgroup over its parents.
func (r Reader) Available() (Reading, error) {
	info, err := r.meminfo()
	if err != nil {
		return Reading{}, err
	}
	best := Reading{Bytes: info.available, Source: "meminfo"}
	rooms, err := r.cgroupRooms()
	if err != nil {
		return Reading{}, err
	}
	for _, room := range rooms {
		if room.Bytes < best.Bytes {
			best = room
		}
	}
	return best, nil
}

// file maps a path on the machine (always absolute, slash-separated) to
// where it lies under r.Root.
func (r Reader) file(name string) string {
	if r.Root == "" {
		return filepath.FromSlash(name)
	}
	return filepath.Join(r.Root, filepath.FromSlash(name))
}

func (r Reader) read(name string) ([]byte, error) {
	return os.ReadFile(r.file(name))
}

// meminfoFigures holds the /proc/meminfo fields Available needs, in bytes.
type meminfoFigures struct {
	total, available uint64
}

func (r Reader) meminfo() (meminfoFigures, error) {
	const name = "/proc/meminfo"
	data, err := r.read(name)
	if err != nil {
		return meminfoFigures{}, err
	}
	info, err := parseMeminfo(data)
	if err != nil {
		return meminfoFigures{}, fmt.Errorf("parse %s: %w", name, err)
	}
	return info, nil
}

// parseMeminfo reads MemTotal and MemAvailable. MemAvailable is the kernel's
// own estimate of what can be allocated without swapping (free memory plus
// reclaimable cache); it appeared in Linux 3.14, and older kernels are not
// supported.
func parseMeminfo(data []byte) (meminfoFigures, error) {
	var info meminfoFigures
	var haveTotal, haveAvailable bool
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *uint64
		switch key {
		case "MemTotal":
			dst, haveTotal = &info.total, true
		case "MemAvailable":
			dst, haveAvailable = &info.available, true
		default:
			continue
		}
		n, err := parseKB(rest)
		if err != nil {
			return meminfoFigures{}, fmt.Errorf("%s: %w", key, err)
		}
		*dst = n
	}
	if err := sc.Err(); err != nil {
		return meminfoFigures{}, err
	}
	if !haveTotal {
		return meminfoFigures{}, errors.New("no MemTotal line")
	}
	if !haveAvailable {
		return meminfoFigures{}, errors.New("no MemAvailable line (Linux 3.14 or later is needed)")
	}
	return info, nil
}

// parseKB parses a meminfo value such as "  16318412 kB" into bytes.
func parseKB(s string) (uint64, error) {
	fields := strings.Fields(s)
	if len(fields) != 2 || fields[1] != "kB" {
		return 0, fmt.Errorf("value %q is not a number of kB", strings.TrimSpace(s))
	}
	kb, err := strconv.ParseUint(fields[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("value %q is not a number of kB", strings.TrimSpace(s))
	}
	if kb > (1<<64-1)/1024 {
		return 0, fmt.Errorf("value %q overflows", strings.TrimSpace(s))
	}
	return kb * 1024, nil
}

// readUint reads a cgroup file holding one decimal number.
func (r Reader) readUint(name string) (uint64, error) {
	data, err := r.read(name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %q is not a byte count", name, strings.TrimSpace(string(data)))
	}
	return n, nil
}

// readStat reads one key of a memory.stat file. A missing file or key reads
// as 0: the subtraction it feeds is a refinement, and not every kernel
// exports every key.
func (r Reader) readStat(name, key string) (uint64, error) {
	data, err := r.read(name)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || k != key {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse %s: %s %q is not a byte count", name, key, strings.TrimSpace(v))
		}
		return n, nil
	}
	return 0, sc.Err()
}

// roomUnder is what is left under limit once used, less reclaimable cache, is
// taken. Usage can exceed the limit (v1 usage is approximate, and a limit
// can be lowered below current usage); that leaves no room, not a wrapped
// huge number.
func roomUnder(limit, used, reclaimable uint64) uint64 {
	used -= min(used, reclaimable)
	if used >= limit {
		return 0
	}
	return limit - used
}
