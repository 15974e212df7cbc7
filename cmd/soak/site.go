package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
)

// site is the local web site the soak's pages come from: /page/N is a small
// page, /hang?c=N sends the start of a page and never finishes it.
type site struct {
	*httptest.Server
	hangActive atomic.Int64 // /hang handlers still running
	hangTotal  atomic.Int64

	mu    sync.Mutex
	hangs map[string]*hang // by cycle
	stop  chan struct{}
}

// hang is the /hang request of one cycle.
type hang struct {
	arrived, ended chan struct{}
	arrivedOnce    sync.Once
	endedOnce      sync.Once
}

func newSite() *site {
	s := &site{hangs: map[string]*hang{}, stop: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		h := s.hang(r.URL.Query().Get("c"))
		s.hangTotal.Add(1)
		s.hangActive.Add(1)
		defer func() {
			s.hangActive.Add(-1)
			h.endedOnce.Do(func() { close(h.ended) })
		}()
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, "<!doctype html><title>hanging</title><h1>still loading")
		w.(http.Flusher).Flush()
		h.arrivedOnce.Do(func() { close(h.arrived) })
		select {
		case <-r.Context().Done():
		case <-s.stop:
		}
	})
	mux.HandleFunc("/page/{n}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "<!doctype html><title>page %s</title><h1>page %s</h1><p>%s</p>", r.PathValue("n"), r.PathValue("n"), filler)
	})
	s.Server = httptest.NewServer(mux)
	return s
}

// filler makes pages a little heavier than a title.
var filler = func() string {
	b := make([]byte, 0, 4096)
	for len(b) < 4000 {
		b = append(b, "lorem ipsum dolor sit amet "...)
	}
	return string(b)
}()

// hang returns cycle c's /hang request; the first caller creates it. A
// cycle loads /hang at most once.
func (s *site) hang(c string) *hang {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.hangs[c]
	if !ok {
		h = &hang{arrived: make(chan struct{}), ended: make(chan struct{})}
		s.hangs[c] = h
	}
	return h
}

func (s *site) forget(c string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.hangs, c)
}

func (s *site) close() {
	close(s.stop)
	s.Close()
}
