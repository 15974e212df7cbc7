// Package sysmem reports how much memory is left for new work on this
// machine, within the process's cgroup limits. The broker's memory admission
// (--min-free-memory) reads it: under a floor, new browser leases wait.
//
// It reads Linux's /proc and cgroup files (v1, v2 and hybrid hierarchies);
// elsewhere Available returns an error.
//
// # What counts as available
//
// The answer is the least of the machine's MemAvailable and, for every
// memory cgroup from the process's own up to the root of the mount, its
// limit minus its usage. Cgroup usage includes page cache; the kernel drops
// clean cache before it kills anything, so inactive file pages are not
// counted as used (kubelet's working set makes the same subtraction).
// Unlimited cgroups are skipped.
package sysmem
