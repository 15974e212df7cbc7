// Package proctree reads Linux's /proc: for the browser pool, which finds
// the processes Playwright starts (it does not tell their pids) and reports
// their memory to operators, and for the commands and tests that watch the
// broker's processes from outside. It lists the live descendants of a
// process (the broker's Playwright driver, its Chromium browsers and their
// helpers) and a few figures per process: memory, open files, threads, CPU
// time.
//
// Every reader is a snapshot and forgives a process that exits while it
// reads: a process gone is left out of Tree, and the figures read as zero
// (or -1 for OpenFDs). It only looks: killing is left to the callers, who
// tell a process by its pid and start time (Proc, Alive), never by a pid
// alone, which the kernel reuses.
package proctree

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Proc is one live process below the root given to Tree.
type Proc struct {
	PID, PPID int
	// Start is when the process started, in clock ticks since boot: with
	// PID it names the process even once the pid is reused.
	Start uint64
	// Cmdline is the command line, its arguments joined by spaces.
	Cmdline string
}

// Snapshot is /proc as read once: every process's parent, state and start.
// Reading it costs a pass over /proc; walking it (Tree) reads only the
// command lines of the processes it lists.
type Snapshot struct {
	stats    map[int]stat
	children map[int][]int
}

// Read takes a Snapshot of the processes running now.
func Read() *Snapshot {
	entries, _ := os.ReadDir("/proc")
	s := &Snapshot{stats: map[int]stat{}, children: map[int][]int{}}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readStat(pid); ok {
			s.stats[pid] = st
			s.children[st.ppid] = append(s.children[st.ppid], pid)
		}
	}
	return s
}

// Tree lists the live processes below root, root itself not included:
// depth first, each process before its children, siblings in pid order.
// Zombies (state Z), dying processes (X) and exiting ones (whose command
// line is already gone) are not listed, as they hold no memory and run
// nothing, but the walk goes on below them.
func (s *Snapshot) Tree(root int) []Proc {
	var out []Proc
	// /proc is not read atomically: a pid reused during the read could make
	// a cycle, which seen breaks.
	seen := map[int]bool{root: true}
	var walk func(int)
	walk = func(parent int) {
		kids := slices.Sorted(slices.Values(s.children[parent]))
		for _, pid := range kids {
			if seen[pid] {
				continue
			}
			seen[pid] = true
			if p, ok := s.listed(pid); ok {
				out = append(out, p)
			}
			walk(pid)
		}
	}
	walk(root)
	return out
}

// Children lists the live children of ppid, as Tree lists processes, in
// pid order.
func (s *Snapshot) Children(ppid int) []Proc {
	var out []Proc
	for _, pid := range slices.Sorted(slices.Values(s.children[ppid])) {
		if p, ok := s.listed(pid); ok {
			out = append(out, p)
		}
	}
	return out
}

// listed returns the process as Tree lists it, with its command line;
// false for a zombie, a dying or exiting process (its command line is
// already gone: its memory is, it is not a zombie yet), or a kernel
// thread.
func (s *Snapshot) listed(pid int) (Proc, bool) {
	st := s.stats[pid]
	if st.state == 'Z' || st.state == 'X' {
		return Proc{}, false
	}
	cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(cmd) == 0 {
		return Proc{}, false
	}
	cmd = bytes.TrimRight(cmd, "\x00")
	return Proc{PID: pid, PPID: st.ppid, Start: st.start, Cmdline: string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}))}, true
}

// Tree lists the live processes below root now: Read().Tree(root).
func Tree(root int) []Proc { return Read().Tree(root) }

// Find returns the process with that pid (its command line left empty),
// unless there is none or it is a zombie.
func Find(pid int) (Proc, bool) {
	s, ok := readStat(pid)
	if !ok || s.state == 'Z' || s.state == 'X' {
		return Proc{}, false
	}
	return Proc{PID: pid, PPID: s.ppid, Start: s.start}, true
}

// Alive reports whether p still runs: its pid names a process started when
// p was (not a later one that reuses the pid) that is not a zombie.
func Alive(p Proc) bool {
	s, ok := readStat(p.PID)
	return ok && s.start == p.Start && s.state != 'Z' && s.state != 'X'
}

// Running reports whether some process with that pid runs (is not a
// zombie). Alive also tells a reused pid apart.
func Running(pid int) bool {
	s, ok := readStat(pid)
	return ok && s.state != 'Z' && s.state != 'X'
}

// StatusField is the number a field of /proc/PID/status starts with: kB
// for the memory fields (VmRSS, VmHWM), a count for Threads; 0 when the
// process or the field is missing.
func StatusField(pid int, field string) int64 {
	return firstNumber(fmt.Sprintf("/proc/%d/status", pid), field)
}

// PSSKB is a process's proportional set size in kB, from
// /proc/PID/smaps_rollup: its resident memory with each shared page
// divided among the processes that map it, so that PSS adds up over a
// process tree where RSS counts shared pages again and again. 0 when the
// process is gone.
func PSSKB(pid int) int64 {
	return firstNumber(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss")
}

// firstNumber reads the first number after "name:" on the line of file
// that starts with it; 0 when it cannot.
func firstNumber(file, name string) int64 {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, name+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		return n
	}
	return 0
}

// OpenFDs counts a process's open file descriptors; -1 when it cannot
// (the process is gone or not ours).
func OpenFDs(pid int) int {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(entries)
}

// HasThread reports whether one of a process's threads has a name (its
// comm) starting with prefix. Chromium names its threads, so this tells,
// say, the renderer running a dedicated worker ("DedicatedWorker") from the
// others.
func HasThread(pid int, prefix string) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return false
	}
	for _, task := range tasks {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/comm", pid, task.Name()))
		if err == nil && strings.HasPrefix(string(comm), prefix) {
			return true
		}
	}
	return false
}

// CPUTicks is the CPU time a process used so far, user and system, in
// clock ticks; 0 when the process is gone.
func CPUTicks(pid int) int64 {
	s, ok := readStat(pid)
	if !ok {
		return 0
	}
	return s.utime + s.stime
}

// stat holds the fields of /proc/PID/stat this package uses.
type stat struct {
	state        byte
	ppid         int
	utime, stime int64
	start        uint64
}

// readStat reads /proc/PID/stat; false when the process is gone.
func readStat(pid int) (stat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return stat{}, false
	}
	// The command name (field 2) is in parentheses and may hold anything,
	// spaces and parentheses too, so count fields from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return stat{}, false
	}
	f := strings.Fields(string(b[i+2:]))
	if len(f) < 20 || f[0] == "" {
		return stat{}, false
	}
	s := stat{state: f[0][0]}
	var err1, err2 error
	s.ppid, err1 = strconv.Atoi(f[1])
	s.start, err2 = strconv.ParseUint(f[19], 10, 64)
	if err1 != nil || err2 != nil {
		return stat{}, false
	}
	s.utime, _ = strconv.ParseInt(f[11], 10, 64)
	s.stime, _ = strconv.ParseInt(f[12], 10, 64)
	return s, true
}
