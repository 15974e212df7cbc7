// Package server is the broker's gRPC edge: it translates the
// browserbroker.v1 API into calls on the lease manager and the browser
// contexts it holds, and domain errors into status codes (errors.go has the
// one table). It holds no lease state of its own.
package server
