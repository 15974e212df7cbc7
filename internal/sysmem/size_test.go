package sysmem

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
	}{
		{"0", 0},
		{"1048576", 1048576},
		{"512MiB", 512 * mib},
		{"2GiB", 2 * gib},
		{"2Gi", 2 * gib},
		{"64KiB", 64 * kib},
		{"1TiB", 1 << 40},
		{"1.5G", 1_500_000_000},
		{"1.5GiB", 1536 * mib},
		{"500M", 500_000_000},
		{"500MB", 500_000_000},
		{"500mb", 500_000_000},
		{"500 MiB", 500 * mib},
		{" 2GiB ", 2 * gib},
		{"10k", 10_000},
		{"100B", 100},
		{"0.5KiB", 512},
		{"0.3GiB", 322122547}, // 322122547.2, rounded down
		{"0GiB", 0},
		{"18446744073709551615", 1<<64 - 1},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, nil", tt.in, got, err, tt.want)
		}
	}
}

func TestParseSizeErrors(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
	}{
		{"", "want a number"},
		{"   ", "want a number"},
		{"GiB", "want a number"},
		{"-1", "want a number"},
		{"-1GiB", "want a number"},
		{"+1GiB", "want a number"},
		{".5G", "want a number"},
		{"1.G", "want a number"},
		{"1.2.3G", "want a number"},
		{"1e9", `unknown unit "e9"`},
		{"12 XB", `unknown unit "XB"`},
		{"2GiB extra", `unknown unit "GiB extra"`},
		{"5P", `unknown unit "P"`},
		{"NaN", "want a number"},
		{"18446744073709551616", "more than"},
		{"20000000TiB", "more than"},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParseSize(%q) = %d, %v; want an error mentioning %q", tt.in, got, err, tt.wantErr)
		}
	}
}
