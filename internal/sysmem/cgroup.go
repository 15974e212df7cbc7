package sysmem

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
)

// v1Unlimited is the smallest cgroup v1 limit read as "no limit". Writing -1
// makes the kernel report its page counter maximum rounded to pages
// (9223372036854771712 with 4 KiB pages, less with larger pages); no real
// limit comes near 4 EiB.
const v1Unlimited = 1 << 62

// procCgroup is what /proc/self/cgroup says about the memory controller.
type procCgroup struct {
	v2Path string // the process's path in the unified hierarchy
	hasV2  bool
	v1Path string // the process's path in the v1 hierarchy holding memory
	hasV1  bool
}

// parseProcCgroup reads /proc/self/cgroup: "0::/path" for the unified
// hierarchy and "ID:controller,...:/path" for each v1 hierarchy.
func parseProcCgroup(data []byte) (procCgroup, error) {
	var pc procCgroup
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if text == "" {
			continue
		}
		// The path is last and may itself hold colons.
		fields := strings.SplitN(text, ":", 3)
		if len(fields) != 3 {
			return procCgroup{}, fmt.Errorf("line %d: %q is not ID:controllers:path", line, text)
		}
		id, controllers, cgPath := fields[0], fields[1], fields[2]
		if _, err := strconv.ParseUint(id, 10, 32); err != nil {
			return procCgroup{}, fmt.Errorf("line %d: hierarchy ID %q is not a number", line, id)
		}
		if !strings.HasPrefix(cgPath, "/") {
			return procCgroup{}, fmt.Errorf("line %d: cgroup path %q is not absolute", line, cgPath)
		}
		switch {
		case id == "0" && controllers == "":
			pc.v2Path, pc.hasV2 = cgPath, true
		case slices.Contains(strings.Split(controllers, ","), "memory"):
			pc.v1Path, pc.hasV1 = cgPath, true
		}
	}
	return pc, sc.Err()
}

// mount is one cgroup line of /proc/self/mountinfo.
type mount struct {
	root      string // the directory of the hierarchy mounted here
	point     string // where it is mounted
	fsType    string // "cgroup" or "cgroup2"
	superOpts string // for v1, holds the controllers, such as "rw,memory"
}

// parseMountinfo returns the cgroup and cgroup2 mounts in /proc/self/mountinfo,
// whose lines read
//
//	36 35 98:0 /root /mnt/point rw,noatime master:1 - fstype source rw,super,opts
//
// with zero or more optional fields before the "-".
func parseMountinfo(data []byte) ([]mount, error) {
	var mounts []mount
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for line := 1; sc.Scan(); line++ {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		sep := slices.Index(fields, "-")
		if sep < 6 || len(fields) < sep+4 {
			return nil, fmt.Errorf("line %d: %q is not a mountinfo line", line, sc.Text())
		}
		fsType := fields[sep+1]
		if fsType != "cgroup" && fsType != "cgroup2" {
			continue
		}
		root, err := unescapeMountPath(fields[3])
		if err != nil {
			return nil, fmt.Errorf("line %d: root: %w", line, err)
		}
		point, err := unescapeMountPath(fields[4])
		if err != nil {
			return nil, fmt.Errorf("line %d: mount point: %w", line, err)
		}
		if !strings.HasPrefix(root, "/") || !strings.HasPrefix(point, "/") {
			return nil, fmt.Errorf("line %d: root %q or mount point %q is not absolute", line, root, point)
		}
		mounts = append(mounts, mount{
			root:      path.Clean(root),
			point:     path.Clean(point),
			fsType:    fsType,
			superOpts: fields[sep+3],
		})
	}
	return mounts, sc.Err()
}

// unescapeMountPath undoes the kernel's octal escapes in mountinfo paths
// (\040 for space, \011 tab, \012 newline, \134 backslash).
func unescapeMountPath(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+4 > len(s) {
			return "", fmt.Errorf("%q ends in a short escape", s)
		}
		n, err := strconv.ParseUint(s[i+1:i+4], 8, 8)
		if err != nil {
			return "", fmt.Errorf("%q has a bad escape %q", s, s[i:i+4])
		}
		b.WriteByte(byte(n))
		i += 3
	}
	return b.String(), nil
}

// cgroupRooms reports the room left under each memory limit that applies to
// the process, innermost first.
func (r Reader) cgroupRooms() ([]Reading, error) {
	const cgroupFile = "/proc/self/cgroup"
	data, err := r.read(cgroupFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // a kernel without cgroups
	}
	if err != nil {
		return nil, err
	}
	pc, err := parseProcCgroup(data)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", cgroupFile, err)
	}
	if !pc.hasV1 && !pc.hasV2 {
		return nil, nil
	}

	const mountinfoFile = "/proc/self/mountinfo"
	data, err = r.read(mountinfoFile)
	if err != nil {
		return nil, err
	}
	mounts, err := parseMountinfo(data)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", mountinfoFile, err)
	}

	var rooms []Reading
	if pc.hasV2 {
		v2 := slices.DeleteFunc(slices.Clone(mounts), func(m mount) bool { return m.fsType != "cgroup2" })
		found, err := r.walkUp(v2, pc.v2Path, "cgroup v2 ", r.v2Room)
		if err != nil {
			return nil, err
		}
		rooms = append(rooms, found...)
	}
	if pc.hasV1 {
		v1 := slices.DeleteFunc(slices.Clone(mounts), func(m mount) bool {
			return m.fsType != "cgroup" || !slices.Contains(strings.Split(m.superOpts, ","), "memory")
		})
		found, err := r.walkUp(v1, pc.v1Path, "cgroup v1 ", r.v1Room)
		if err != nil {
			return nil, err
		}
		rooms = append(rooms, found...)
	}
	return rooms, nil
}

// walkUp reads roomAt in the process's cgroup, at cgPath among mounts, and
// in each parent up to the mount point: a parent's limit bounds its whole
// subtree. Levels without a limit are left out.
func (r Reader) walkUp(mounts []mount, cgPath, sourcePrefix string, roomAt func(dir string) (uint64, bool, error)) ([]Reading, error) {
	m, dir, ok := r.cgroupDir(mounts, cgPath)
	if !ok {
		return nil, nil
	}
	var rooms []Reading
	for {
		room, limited, err := roomAt(dir)
		if err != nil {
			return nil, err
		}
		if limited {
			rooms = append(rooms, Reading{Bytes: room, Source: sourcePrefix + dir})
		}
		if dir == m.point || dir == "/" {
			return rooms, nil
		}
		dir = path.Dir(dir)
	}
}

// cgroupDir finds the directory of the process's cgroup, at cgPath in its
// hierarchy, among the mounts of that hierarchy.
//
// A mount shows the hierarchy from its root down, so the directory is the
// mount point joined with cgPath less that root. The mount whose root is
// the longest prefix of cgPath wins. When no root is a prefix, the process
// usually sits in a cgroup namespace whose paths ("/", or "/child" after it
// moved itself) are relative to a mount the host made of its own cgroup
// (root "/kubepods/.../ctr"); then cgPath is taken relative to the mount
// point if that directory exists, and the mount point itself otherwise.
func (r Reader) cgroupDir(mounts []mount, cgPath string) (mount, string, bool) {
	if len(mounts) == 0 {
		return mount{}, "", false
	}
	cgPath = path.Clean(cgPath)
	best, bestDir := -1, ""
	for i, m := range mounts {
		rel, ok := relativeTo(cgPath, m.root)
		if ok && (best < 0 || len(m.root) > len(mounts[best].root)) {
			best, bestDir = i, path.Join(m.point, rel)
		}
	}
	if best >= 0 {
		return mounts[best], bestDir, true
	}
	m := mounts[0]
	dir := path.Join(m.point, cgPath)
	if fi, err := os.Stat(r.file(dir)); err == nil && fi.IsDir() {
		return m, dir, true
	}
	return m, m.point, true
}

// relativeTo reports p's path below root ("/" for root itself), and whether
// p lies at or below root.
func relativeTo(p, root string) (string, bool) {
	if root == "/" {
		return p, true
	}
	if p == root {
		return "/", true
	}
	if rest, ok := strings.CutPrefix(p, root+"/"); ok {
		return "/" + rest, true
	}
	return "", false
}

// v2Room reads one cgroup v2 level. A level without memory.max (the root
// cgroup, or memory not enabled for this subtree) or with "max" sets no
// limit.
func (r Reader) v2Room(dir string) (room uint64, limited bool, err error) {
	maxFile := path.Join(dir, "memory.max")
	data, err := r.read(maxFile)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	s := strings.TrimSpace(string(data))
	if s == "max" {
		return 0, false, nil
	}
	limit, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("parse %s: %q is neither a byte count nor \"max\"", maxFile, s)
	}
	current, err := r.readUint(path.Join(dir, "memory.current"))
	if err != nil {
		return 0, false, err
	}
	inactive, err := r.readStat(path.Join(dir, "memory.stat"), "inactive_file")
	if err != nil {
		return 0, false, err
	}
	return roomUnder(limit, current, inactive), true, nil
}

// v1Room reads one cgroup v1 level. A level without memory.limit_in_bytes
// sets no limit, nor does one at the kernel's "unlimited" value.
//
// It reads total_inactive_file, the hierarchical count, because v1's
// usage_in_bytes covers the whole subtree; kubelet does the same for v1.
func (r Reader) v1Room(dir string) (room uint64, limited bool, err error) {
	limitFile := path.Join(dir, "memory.limit_in_bytes")
	limit, err := r.readUint(limitFile)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	if limit >= v1Unlimited {
		return 0, false, nil
	}
	usage, err := r.readUint(path.Join(dir, "memory.usage_in_bytes"))
	if err != nil {
		return 0, false, err
	}
	inactive, err := r.readStat(path.Join(dir, "memory.stat"), "total_inactive_file")
	if err != nil {
		return 0, false, err
	}
	return roomUnder(limit, usage, inactive), true, nil
}
