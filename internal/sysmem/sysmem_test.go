package sysmem

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

const (
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30
)

// meminfo8GiB is a /proc/meminfo with 16 GiB total and 8 GiB available.
const meminfo8GiB = `MemTotal:       16777216 kB
MemFree:         4194304 kB
MemAvailable:    8388608 kB
Buffers:          102400 kB
Cached:          3145728 kB
`

// A host with only the unified hierarchy.
const mountinfoV2 = `22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/root rw
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
24 22 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`

// A hybrid host: v1 controllers, and the unified hierarchy without memory.
const mountinfoHybrid = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:7 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:8 - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

// writeTree writes files (paths as on the machine, contents) under a new
// temporary root and returns the root.
func writeTree(tb testing.TB, files map[string]string) string {
	tb.Helper()
	root := tb.TempDir()
	for name, content := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return root
}

// withBase adds a meminfo to files, unless they set their own.
func withBase(files map[string]string) map[string]string {
	if _, ok := files["/proc/meminfo"]; !ok {
		files["/proc/meminfo"] = meminfo8GiB
	}
	return files
}

func TestReaderAvailable(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  Reading
	}{
		{
			name:  "no cgroups",
			files: map[string]string{},
			want:  Reading{Bytes: 8 * gib, Source: "meminfo"},
		},
		{
			name: "v2 limit",
			files: map[string]string{
				"/proc/self/cgroup":                            "0::/broker.service\n",
				"/proc/self/mountinfo":                         mountinfoV2,
				"/sys/fs/cgroup/broker.service/memory.max":     "2147483648\n",
				"/sys/fs/cgroup/broker.service/memory.current": "1073741824\n",
			},
			want: Reading{Bytes: 1 * gib, Source: "cgroup v2 /sys/fs/cgroup/broker.service"},
		},
		{
			name: "v2 max falls back to meminfo",
			files: map[string]string{
				"/proc/self/cgroup":                            "0::/broker.service\n",
				"/proc/self/mountinfo":                         mountinfoV2,
				"/sys/fs/cgroup/broker.service/memory.max":     "max\n",
				"/sys/fs/cgroup/broker.service/memory.current": "1073741824\n",
			},
			want: Reading{Bytes: 8 * gib, Source: "meminfo"},
		},
		{
			name: "v2 limit looser than meminfo",
			files: map[string]string{
				"/proc/self/cgroup":                            "0::/broker.service\n",
				"/proc/self/mountinfo":                         mountinfoV2,
				"/sys/fs/cgroup/broker.service/memory.max":     "68719476736\n",
				"/sys/fs/cgroup/broker.service/memory.current": "1073741824\n",
			},
			want: Reading{Bytes: 8 * gib, Source: "meminfo"},
		},
		{
			name: "v2 nested, parent tighter",
			files: map[string]string{
				"/proc/self/cgroup":                               "0::/kubepods/pod1/ctr\n",
				"/proc/self/mountinfo":                            mountinfoV2,
				"/sys/fs/cgroup/kubepods/memory.max":              "max\n",
				"/sys/fs/cgroup/kubepods/memory.current":          "3221225472\n",
				"/sys/fs/cgroup/kubepods/pod1/memory.max":         "2147483648\n",
				"/sys/fs/cgroup/kubepods/pod1/memory.current":     "1610612736\n",
				"/sys/fs/cgroup/kubepods/pod1/ctr/memory.max":     "4294967296\n",
				"/sys/fs/cgroup/kubepods/pod1/ctr/memory.current": "1073741824\n",
			},
			want: Reading{Bytes: 512 * mib, Source: "cgroup v2 /sys/fs/cgroup/kubepods/pod1"},
		},
		{
			name: "v2 level without memory files is skipped",
			files: map[string]string{
				"/proc/self/cgroup":                     "0::/a/b\n",
				"/proc/self/mountinfo":                  mountinfoV2,
				"/sys/fs/cgroup/a/memory.max":           "1073741824\n",
				"/sys/fs/cgroup/a/memory.current":       "0\n",
				"/sys/fs/cgroup/a/b/cgroup.controllers": "cpu\n",
			},
			want: Reading{Bytes: 1 * gib, Source: "cgroup v2 /sys/fs/cgroup/a"},
		},
		{
			name: "v2 inactive_file is not counted as used",
			files: map[string]string{
				"/proc/self/cgroup":                 "0::/app\n",
				"/proc/self/mountinfo":              mountinfoV2,
				"/sys/fs/cgroup/app/memory.max":     "2147483648\n",
				"/sys/fs/cgroup/app/memory.current": "1610612736\n",
				"/sys/fs/cgroup/app/memory.stat":    "anon 536870912\nfile 1073741824\nactive_file 0\ninactive_file 1073741824\nfile_mapped 0\n",
			},
			want: Reading{Bytes: 1536 * mib, Source: "cgroup v2 /sys/fs/cgroup/app"},
		},
		{
			name: "v2 active_file is counted as used",
			files: map[string]string{
				"/proc/self/cgroup":                 "0::/app\n",
				"/proc/self/mountinfo":              mountinfoV2,
				"/sys/fs/cgroup/app/memory.max":     "2147483648\n",
				"/sys/fs/cgroup/app/memory.current": "1610612736\n",
				"/sys/fs/cgroup/app/memory.stat":    "active_file 1073741824\ninactive_file 0\n",
			},
			want: Reading{Bytes: 512 * mib, Source: "cgroup v2 /sys/fs/cgroup/app"},
		},
		{
			name: "v2 inactive_file above current leaves the whole limit",
			files: map[string]string{
				"/proc/self/cgroup":                 "0::/app\n",
				"/proc/self/mountinfo":              mountinfoV2,
				"/sys/fs/cgroup/app/memory.max":     "1073741824\n",
				"/sys/fs/cgroup/app/memory.current": "4096\n",
				"/sys/fs/cgroup/app/memory.stat":    "inactive_file 8192\n",
			},
			want: Reading{Bytes: 1 * gib, Source: "cgroup v2 /sys/fs/cgroup/app"},
		},
		{
			name: "v2 usage above limit gives 0",
			files: map[string]string{
				"/proc/self/cgroup":                 "0::/app\n",
				"/proc/self/mountinfo":              mountinfoV2,
				"/sys/fs/cgroup/app/memory.max":     "1073741824\n",
				"/sys/fs/cgroup/app/memory.current": "1073745920\n",
			},
			want: Reading{Bytes: 0, Source: "cgroup v2 /sys/fs/cgroup/app"},
		},
		{
			name: "v2 namespaced container sees its cgroup at the mount root",
			files: map[string]string{
				"/proc/self/cgroup":             "0::/\n",
				"/proc/self/mountinfo":          "1310 1301 0:27 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw\n",
				"/sys/fs/cgroup/memory.max":     "1073741824\n",
				"/sys/fs/cgroup/memory.current": "268435456\n",
			},
			want: Reading{Bytes: 768 * mib, Source: "cgroup v2 /sys/fs/cgroup"},
		},
		{
			name: "v2 namespaced path under a host-rooted mount",
			files: map[string]string{
				"/proc/self/cgroup":             "0::/\n",
				"/proc/self/mountinfo":          "1310 1301 0:27 /kubepods/burstable/pod1/ctr /sys/fs/cgroup ro,relatime - cgroup2 cgroup rw\n",
				"/sys/fs/cgroup/memory.max":     "1073741824\n",
				"/sys/fs/cgroup/memory.current": "268435456\n",
			},
			want: Reading{Bytes: 768 * mib, Source: "cgroup v2 /sys/fs/cgroup"},
		},
		{
			name: "v2 namespaced child under a host-rooted mount",
			files: map[string]string{
				"/proc/self/cgroup":                        "0::/init.scope\n",
				"/proc/self/mountinfo":                     "1310 1301 0:27 /kubepods/ctr /sys/fs/cgroup rw,relatime - cgroup2 cgroup rw\n",
				"/sys/fs/cgroup/memory.max":                "2147483648\n",
				"/sys/fs/cgroup/memory.current":            "1073741824\n",
				"/sys/fs/cgroup/init.scope/memory.max":     "536870912\n",
				"/sys/fs/cgroup/init.scope/memory.current": "268435456\n",
			},
			want: Reading{Bytes: 256 * mib, Source: "cgroup v2 /sys/fs/cgroup/init.scope"},
		},
		{
			name: "v2 mount point with an escaped space",
			files: map[string]string{
				"/proc/self/cgroup":           "0::/app\n",
				"/proc/self/mountinfo":        "24 1 0:22 / /cg\\040root rw - cgroup2 cgroup2 rw\n",
				"/cg root/app/memory.max":     "1073741824\n",
				"/cg root/app/memory.current": "0\n",
			},
			want: Reading{Bytes: 1 * gib, Source: "cgroup v2 /cg root/app"},
		},
		{
			name: "v1 memory controller",
			files: map[string]string{
				"/proc/self/cgroup":                                      "11:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n0::/docker/abc\n",
				"/proc/self/mountinfo":                                   mountinfoHybrid,
				"/sys/fs/cgroup/memory/memory.limit_in_bytes":            "9223372036854771712\n",
				"/sys/fs/cgroup/memory/memory.usage_in_bytes":            "8589934592\n",
				"/sys/fs/cgroup/memory/docker/memory.limit_in_bytes":     "9223372036854771712\n",
				"/sys/fs/cgroup/memory/docker/memory.usage_in_bytes":     "2147483648\n",
				"/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "1073741824\n",
				"/sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes": "268435456\n",
				"/sys/fs/cgroup/memory/docker/abc/memory.stat":           "cache 67108864\ninactive_file 1\ntotal_inactive_file 67108864\n",
				"/sys/fs/cgroup/unified/docker/abc/cgroup.procs":         "1\n",
			},
			want: Reading{Bytes: 832 * mib, Source: "cgroup v1 /sys/fs/cgroup/memory/docker/abc"},
		},
		{
			name: "v1 memory co-mounted with other controllers",
			files: map[string]string{
				"/proc/self/cgroup":    "3:cpu,memory:/job\n",
				"/proc/self/mountinfo": "30 25 0:26 / /sys/fs/cgroup/cpu,memory rw - cgroup cgroup rw,cpu,memory\n",
				"/sys/fs/cgroup/cpu,memory/job/memory.limit_in_bytes": "536870912\n",
				"/sys/fs/cgroup/cpu,memory/job/memory.usage_in_bytes": "0\n",
			},
			want: Reading{Bytes: 512 * mib, Source: "cgroup v1 /sys/fs/cgroup/cpu,memory/job"},
		},
		{
			name: "v1 unlimited falls back to meminfo",
			files: map[string]string{
				"/proc/self/cgroup":                           "4:memory:/\n",
				"/proc/self/mountinfo":                        mountinfoHybrid,
				"/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
				"/sys/fs/cgroup/memory/memory.usage_in_bytes": "16106127360\n",
			},
			want: Reading{Bytes: 8 * gib, Source: "meminfo"},
		},
		{
			name: "v1 without cgroupns sees its cgroup at the mount root",
			files: map[string]string{
				"/proc/self/cgroup":                           "4:memory:/docker/abc\n",
				"/proc/self/mountinfo":                        "35 31 0:32 /docker/abc /sys/fs/cgroup/memory ro,relatime - cgroup cgroup rw,memory\n",
				"/sys/fs/cgroup/memory/memory.limit_in_bytes": "1073741824\n",
				"/sys/fs/cgroup/memory/memory.usage_in_bytes": "2147483648\n",
			},
			want: Reading{Bytes: 0, Source: "cgroup v1 /sys/fs/cgroup/memory"},
		},
		{
			name: "v1 and v2 both limited, v2 tighter",
			files: map[string]string{
				"/proc/self/cgroup":                             "4:memory:/a\n0::/b\n",
				"/proc/self/mountinfo":                          mountinfoHybrid,
				"/sys/fs/cgroup/memory/a/memory.limit_in_bytes": "1073741824\n",
				"/sys/fs/cgroup/memory/a/memory.usage_in_bytes": "0\n",
				"/sys/fs/cgroup/unified/b/memory.max":           "536870912\n",
				"/sys/fs/cgroup/unified/b/memory.current":       "0\n",
			},
			want: Reading{Bytes: 512 * mib, Source: "cgroup v2 /sys/fs/cgroup/unified/b"},
		},
		{
			name: "tie names meminfo",
			files: map[string]string{
				"/proc/self/cgroup":             "0::/\n",
				"/proc/self/mountinfo":          mountinfoV2,
				"/sys/fs/cgroup/memory.max":     "8589934592\n",
				"/sys/fs/cgroup/memory.current": "0\n",
			},
			want: Reading{Bytes: 8 * gib, Source: "meminfo"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := writeTree(t, withBase(tt.files))
			got, err := Reader{Root: root}.Available()
			if err != nil {
				t.Fatalf("Available() error = %v, want %+v", err, tt.want)
			}
			if got != tt.want {
				t.Errorf("Available() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestReaderAvailableMalformed(t *testing.T) {
	v2 := func(maxValue, current, stat string) map[string]string {
		files := map[string]string{
			"/proc/self/cgroup":             "0::/\n",
			"/proc/self/mountinfo":          mountinfoV2,
			"/sys/fs/cgroup/memory.max":     maxValue,
			"/sys/fs/cgroup/memory.current": current,
		}
		if stat != "" {
			files["/sys/fs/cgroup/memory.stat"] = stat
		}
		return files
	}
	tests := []struct {
		name    string
		files   map[string]string
		wantErr string
	}{
		{"meminfo empty", map[string]string{"/proc/meminfo": ""}, "no MemTotal"},
		{"meminfo value not a number", map[string]string{"/proc/meminfo": "MemTotal: 1 kB\nMemAvailable: lots kB\n"}, "MemAvailable"},
		{"meminfo value without unit", map[string]string{"/proc/meminfo": "MemTotal: 1 kB\nMemAvailable: 1024\n"}, "MemAvailable"},
		{"meminfo value overflows", map[string]string{"/proc/meminfo": "MemTotal: 1 kB\nMemAvailable: 18446744073709551615 kB\n"}, "overflows"},
		{"meminfo without MemAvailable", map[string]string{"/proc/meminfo": "MemTotal: 1 kB\nMemFree: 1 kB\n"}, "no MemAvailable"},
		{"cgroup line without fields", map[string]string{"/proc/self/cgroup": "garbage\n"}, "/proc/self/cgroup"},
		{"cgroup hierarchy ID not a number", map[string]string{"/proc/self/cgroup": "x::/\n"}, "hierarchy ID"},
		{"cgroup path relative", map[string]string{"/proc/self/cgroup": "0::app\n"}, "not absolute"},
		{"mountinfo missing", map[string]string{"/proc/self/cgroup": "0::/\n"}, "mountinfo"},
		{"mountinfo line short", map[string]string{"/proc/self/cgroup": "0::/\n", "/proc/self/mountinfo": "24 1 0:22 /\n"}, "not a mountinfo line"},
		{"mountinfo without fstype", map[string]string{"/proc/self/cgroup": "0::/\n", "/proc/self/mountinfo": "24 1 0:22 / /sys/fs/cgroup rw -\n"}, "not a mountinfo line"},
		{"mountinfo bad escape", map[string]string{"/proc/self/cgroup": "0::/\n", "/proc/self/mountinfo": "24 1 0:22 / /cg\\9xyz rw - cgroup2 cgroup2 rw\n"}, "bad escape"},
		{"mountinfo short escape", map[string]string{"/proc/self/cgroup": "0::/\n", "/proc/self/mountinfo": "24 1 0:22 / /cg\\04 rw - cgroup2 cgroup2 rw\n"}, "short escape"},
		{"memory.max not a number", v2("12x\n", "0\n", ""), "memory.max"},
		{"memory.max negative", v2("-1\n", "0\n", ""), "memory.max"},
		{"memory.current missing", map[string]string{"/proc/self/cgroup": "0::/\n", "/proc/self/mountinfo": mountinfoV2, "/sys/fs/cgroup/memory.max": "1\n"}, "memory.current"},
		{"memory.current empty", v2("1024\n", "", ""), "memory.current"},
		{"memory.stat inactive_file not a number", v2("1024\n", "0\n", "inactive_file many\n"), "inactive_file"},
		{"v1 limit not a number", map[string]string{
			"/proc/self/cgroup":                           "4:memory:/\n",
			"/proc/self/mountinfo":                        mountinfoHybrid,
			"/sys/fs/cgroup/memory/memory.limit_in_bytes": "unlimited\n",
		}, "memory.limit_in_bytes"},
		{"v1 usage missing", map[string]string{
			"/proc/self/cgroup":                           "4:memory:/\n",
			"/proc/self/mountinfo":                        mountinfoHybrid,
			"/sys/fs/cgroup/memory/memory.limit_in_bytes": "1024\n",
		}, "memory.usage_in_bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := writeTree(t, withBase(tt.files))
			got, err := Reader{Root: root}.Available()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Available() = %+v, %v; want an error mentioning %q", got, err, tt.wantErr)
			}
		})
	}
}

func TestReaderAvailableNoMeminfo(t *testing.T) {
	root := t.TempDir()
	if got, err := (Reader{Root: root}).Available(); err == nil {
		t.Fatalf("Available() on an empty tree = %+v, nil; want an error", got)
	}
}

// TestAvailableOnThisMachine reads the real machine: the answer must be
// something, and no more than the machine has.
func TestAvailableOnThisMachine(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sysmem reads Linux's /proc")
	}
	got, err := Available()
	if err != nil {
		t.Fatalf("Available() error = %v", err)
	}
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	info, err := parseMeminfo(data)
	if err != nil {
		t.Fatalf("parseMeminfo(/proc/meminfo) error = %v", err)
	}
	t.Logf("Available() = %d bytes (%.2f GiB) from %s; MemTotal %d bytes", got.Bytes, float64(got.Bytes)/gib, got.Source, info.total)
	if got.Bytes == 0 || got.Bytes > info.total {
		t.Errorf("Available() = %+v, want 0 < bytes <= MemTotal (%d)", got, info.total)
	}
	if got.Source == "" {
		t.Errorf("Available() = %+v, want a Source", got)
	}
}
