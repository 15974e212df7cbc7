package proctree

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// gone is a pid no process has: above the kernel's largest pid_max (2^22).
const gone = 1 << 30

// start runs a command in its own process group and, at cleanup, kills the
// group and reaps the command.
func start(tb testing.TB, name string, args ...string) *exec.Cmd {
	tb.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	tb.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	return cmd
}

// zombieChild returns a child of ppid that exited and was not reaped, or 0.
func zombieChild(ppid int) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if s, ok := readStat(pid); ok && s.ppid == ppid && s.state == 'Z' {
			return pid
		}
	}
	return 0
}

// The test process gets this tree, and Tree must list the four live
// processes with their parents, and neither zombie:
//
//	self
//	├─ sh -c "sleep 31 & sleep 32; :"
//	│   ├─ sleep 31
//	│   └─ sleep 32
//	├─ sleep 33 (sh that ran "true & exec sleep 33")
//	│   └─ true, exited, never reaped: a zombie
//	└─ true, exited, not reaped yet: a zombie
func TestTree(t *testing.T) {
	self := os.Getpid()
	shell := start(t, "sh", "-c", "sleep 31 & sleep 32; :").Process.Pid
	sleeper := start(t, "sh", "-c", "true & exec sleep 33").Process.Pid
	exited := start(t, "true").Process.Pid

	// Wait for both zombies and for the sleeps to run: until they exec,
	// forked children have their parent's command line.
	var tree []Proc
	var sleeperZombie int
	byPID, byCmdline := map[int]Proc{}, map[string]Proc{}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		// The zombies first, then the tree: read the other way round, a
		// process could still be exiting when Tree looks at it.
		sleeperZombie = zombieChild(sleeper)
		selfZombie := zombieChild(self)
		tree = Tree(self)
		clear(byPID)
		clear(byCmdline)
		for _, p := range tree {
			byPID[p.PID] = p
			byCmdline[p.Cmdline] = p
		}
		_, ok31 := byCmdline["sleep 31"]
		_, ok32 := byCmdline["sleep 32"]
		_, ok33 := byCmdline["sleep 33"]
		if ok31 && ok32 && ok33 && sleeperZombie != 0 && selfZombie == exited {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: Tree(self) = %+v, zombie below sleep 33 %d, zombie below self %d; want sleep 31, 32, 33 and both zombies (%d below self)",
				tree, sleeperZombie, zombieChild(self), exited)
		}
	}

	if len(tree) != 4 {
		t.Errorf("Tree(self) = %+v, want 4 processes", tree)
	}
	for _, p := range tree {
		if s, ok := readStat(p.PID); !ok || p.Start != s.start || p.Start == 0 {
			t.Errorf("Tree(self) lists %+v; /proc/%d/stat says start %d, want the same", p, p.PID, s.start)
		}
	}
	for _, want := range []Proc{
		{PID: shell, PPID: self, Cmdline: "sh -c sleep 31 & sleep 32; :"},
		{PID: byCmdline["sleep 31"].PID, PPID: shell, Cmdline: "sleep 31"},
		{PID: byCmdline["sleep 32"].PID, PPID: shell, Cmdline: "sleep 32"},
		{PID: sleeper, PPID: self, Cmdline: "sleep 33"},
	} {
		got, ok := byPID[want.PID]
		if !ok || got.PPID != want.PPID || got.Cmdline != want.Cmdline {
			t.Errorf("Tree(self) = %+v; want it to hold pid %d, ppid %d, cmdline %q", tree, want.PID, want.PPID, want.Cmdline)
		}
	}
	for _, z := range []int{exited, sleeperZombie} {
		if _, ok := byPID[z]; ok {
			t.Errorf("Tree(self) = %+v; want no zombie %d", tree, z)
		}
	}
	if got := Tree(sleeper); len(got) != 0 {
		t.Errorf("Tree(sleep 33) = %+v, want none: its only child is a zombie", got)
	}
	if got := Tree(gone); len(got) != 0 {
		t.Errorf("Tree(%d) = %+v, want none for a pid no process has", gone, got)
	}

	// Children: the shell and sleep 33, not the zombie, nor grandchildren.
	var kids []int
	for _, p := range Read().Children(self) {
		kids = append(kids, p.PID)
	}
	if want := []int{min(shell, sleeper), max(shell, sleeper)}; !slices.Equal(kids, want) {
		t.Errorf("Children(self) = %v, want %v (the shell and sleep 33, in pid order)", kids, want)
	}
	// Find: a live process with its start, none for a zombie or a gone pid.
	if p, ok := Find(sleeper); !ok || p.Start != byPID[sleeper].Start || p.PPID != self {
		t.Errorf("Find(sleep 33) = %+v, %v; want it, with start %d", p, ok, byPID[sleeper].Start)
	}
	for _, pid := range []int{sleeperZombie, gone} {
		if p, ok := Find(pid); ok {
			t.Errorf("Find(%d) = %+v, want none (a zombie, or no process)", pid, p)
		}
	}
}

func TestStatusField(t *testing.T) {
	self := os.Getpid()
	for _, c := range []struct {
		pid   int
		field string
		ok    func(int64) bool
		want  string
	}{
		{self, "Pid", func(n int64) bool { return n == int64(self) }, "our pid"},
		{self, "VmRSS", func(n int64) bool { return n > 0 }, "> 0 kB"},
		{self, "Threads", func(n int64) bool { return n >= 1 }, ">= 1"},
		{self, "NoSuchField", func(n int64) bool { return n == 0 }, "0"},
		{self, "Vm", func(n int64) bool { return n == 0 }, "0 (a field is matched whole)"},
		{gone, "VmRSS", func(n int64) bool { return n == 0 }, "0"},
	} {
		if got := StatusField(c.pid, c.field); !c.ok(got) {
			t.Errorf("StatusField(%d, %q) = %d, want %s", c.pid, c.field, got, c.want)
		}
	}
}

func TestPSSKB(t *testing.T) {
	if got := PSSKB(os.Getpid()); got <= 0 {
		t.Errorf("PSSKB(self) = %d, want > 0", got)
	}
	if got := PSSKB(gone); got != 0 {
		t.Errorf("PSSKB(%d) = %d, want 0 for a pid no process has", gone, got)
	}
}

func TestOpenFDs(t *testing.T) {
	self := os.Getpid()
	before := OpenFDs(self)
	if before < 1 {
		t.Fatalf("OpenFDs(self) = %d, want > 0", before)
	}
	dir := t.TempDir()
	for i := range 5 {
		f, err := os.Create(filepath.Join(dir, string(rune('a'+i))))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
	}
	if got := OpenFDs(self); got != before+5 {
		t.Errorf("OpenFDs(self) after opening 5 files = %d, want %d", got, before+5)
	}
	if got := OpenFDs(gone); got != -1 {
		t.Errorf("OpenFDs(%d) = %d, want -1 for a pid no process has", gone, got)
	}
}

// A thread named the way Chromium names a dedicated worker's is found
// among the process's threads, and only while it has that name.
func TestHasThread(t *testing.T) {
	self := os.Getpid()
	if HasThread(self, "DedicatedWorker") {
		t.Fatalf("HasThread(self, DedicatedWorker) = true before any thread has that name")
	}
	named, rename := make(chan error), make(chan struct{})
	go func() {
		// The goroutine holds its thread while the thread has the name,
		// and gives it back to the scheduler under its old one.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		const comm = "/proc/thread-self/comm"
		old, err := os.ReadFile(comm)
		if err == nil {
			err = os.WriteFile(comm, []byte("DedicatedWorker"), 0)
		}
		named <- err
		<-rename
		named <- os.WriteFile(comm, bytes.TrimSuffix(old, []byte("\n")), 0)
	}()
	if err := <-named; err != nil {
		t.Fatalf("name a thread DedicatedWorker: %v", err)
	}
	if !HasThread(self, "DedicatedWorker") {
		t.Errorf("HasThread(self, DedicatedWorker) = false with a thread of that name")
	}
	if !HasThread(self, "Dedicated") {
		t.Errorf("HasThread(self, Dedicated) = false, want a prefix to match")
	}
	close(rename)
	if err := <-named; err != nil {
		t.Fatalf("give the thread its name back: %v", err)
	}
	if HasThread(self, "DedicatedWorker") {
		t.Errorf("HasThread(self, DedicatedWorker) = true after the thread got its old name back")
	}
	if HasThread(gone, "") {
		t.Errorf("HasThread(%d, \"\") = true, want false for a pid no process has", gone)
	}
}

func TestCPUTicks(t *testing.T) {
	self := os.Getpid()
	before := CPUTicks(self)
	if before <= 0 {
		t.Errorf("CPUTicks(self) = %d, want > 0", before)
	}
	deadline := time.Now().Add(10 * time.Second)
	for CPUTicks(self) <= before {
		if time.Now().After(deadline) {
			t.Fatalf("CPUTicks(self) stayed %d through 10s of spinning, want it to grow", before)
		}
		for spin := time.Now(); time.Since(spin) < 20*time.Millisecond; {
		}
	}
	if got := CPUTicks(gone); got != 0 {
		t.Errorf("CPUTicks(%d) = %d, want 0 for a pid no process has", gone, got)
	}
}

// Alive follows one process: true while it runs; false once it is a
// zombie, once it is reaped, and for a Proc whose start time is not the
// running process's (its pid reused).
func TestAlive(t *testing.T) {
	cmd := start(t, "sleep", "34")
	var p Proc
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		for _, q := range Tree(os.Getpid()) {
			if q.PID == cmd.Process.Pid {
				p = q
			}
		}
		if p.PID != 0 || time.Now().After(deadline) {
			break
		}
	}
	if p.PID == 0 {
		t.Fatal("Tree does not list the sleep")
	}
	if !Alive(p) || !Running(p.PID) {
		t.Fatalf("Alive(%+v), Running = %v, %v while it runs; want true, true", p, Alive(p), Running(p.PID))
	}
	if reused := (Proc{PID: p.PID, Start: p.Start + 1}); Alive(reused) {
		t.Errorf("Alive(%+v) = true for another start time (a reused pid)", reused)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); zombieChild(os.Getpid()) != p.PID; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the killed sleep is not a zombie after 10s")
		}
	}
	if Alive(p) || Running(p.PID) {
		t.Errorf("Alive(%+v), Running = %v, %v for a zombie; want false, false", p, Alive(p), Running(p.PID))
	}
	_ = cmd.Wait()
	if Alive(p) {
		t.Errorf("Alive(%+v) = true once reaped", p)
	}
	if Alive(Proc{PID: gone}) || Running(gone) {
		t.Error("Alive or Running(no such pid) = true")
	}
}
