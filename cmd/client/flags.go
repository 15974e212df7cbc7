package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	brokerv1 "github.com/browserbroker/broker/gen/browserbroker/v1"
)

// stringsFlag collects a repeatable string flag.
type stringsFlag []string

func (s *stringsFlag) String() string { return strings.Join(*s, ",") }

func (s *stringsFlag) Set(v string) error {
	*s = append(*s, v)
	return nil
}

// labelsFlag collects repeatable k=v labels; a later value for a key wins.
type labelsFlag map[string]string

func (l labelsFlag) String() string { return formatLabels(l) }

func (l labelsFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("label %q is not k=v", v)
	}
	l[k] = val
	return nil
}

// viewportFlag parses WIDTHxHEIGHT; nil until set, so the broker's default
// applies.
type viewportFlag struct{ v *brokerv1.Viewport }

func (f *viewportFlag) String() string {
	if f.v == nil {
		return ""
	}
	return fmt.Sprintf("%dx%d", f.v.GetWidth(), f.v.GetHeight())
}

func (f *viewportFlag) Set(s string) error {
	ws, hs, ok := strings.Cut(strings.ToLower(s), "x")
	if !ok {
		return errors.New("want WIDTHxHEIGHT, such as 1280x720")
	}
	w, werr := strconv.ParseInt(ws, 10, 32)
	h, herr := strconv.ParseInt(hs, 10, 32)
	if werr != nil || herr != nil || w <= 0 || h <= 0 {
		return errors.New("want WIDTHxHEIGHT with positive integers, such as 1280x720")
	}
	f.v = &brokerv1.Viewport{Width: int32(w), Height: int32(h)}
	return nil
}
