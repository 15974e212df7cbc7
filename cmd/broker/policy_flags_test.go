package main

import (
	"io"
	"testing"
)

func TestPolicyFlags(t *testing.T) {
	c, err := parseFlags([]string{"--deny-private-networks", "--disable-evaluate"}, io.Discard)
	if err != nil {
		t.Fatalf("parseFlags(--deny-private-networks --disable-evaluate) = %v", err)
	}
	if !c.browser.DenyPrivateNetworks || !c.disableEvaluate {
		t.Errorf("parseFlags(--deny-private-networks --disable-evaluate): browser.DenyPrivateNetworks = %v, disableEvaluate = %v; want both true",
			c.browser.DenyPrivateNetworks, c.disableEvaluate)
	}
	c, err = parseFlags(nil, io.Discard)
	if err != nil || c.browser.DenyPrivateNetworks || c.disableEvaluate {
		t.Errorf("parseFlags() = %v, DenyPrivateNetworks %v, disableEvaluate %v; want both off by default", err, c.browser.DenyPrivateNetworks, c.disableEvaluate)
	}
}
