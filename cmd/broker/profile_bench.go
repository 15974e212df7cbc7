//go:build benchprofile

package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
)

// A broker built with -tags benchprofile (cmd/bench --broker-cpuprofile
// builds one) and run with BROKER_CPUPROFILE=FILE writes a CPU profile to
// FILE between two SIGUSR1s, so that the benchmark can profile the broker
// over one measurement. Release builds have none of this.
func init() {
	path := os.Getenv("BROKER_CPUPROFILE")
	if path == "" {
		return
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	go func() {
		for {
			<-sig
			f, err := os.Create(path)
			if err == nil {
				err = pprof.StartCPUProfile(f)
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "benchprofile: %v\n", err)
				continue
			}
			<-sig
			pprof.StopCPUProfile()
			if err := f.Close(); err != nil {
				fmt.Fprintf(os.Stderr, "benchprofile: %v\n", err)
			}
		}
	}()
}
