package sysmem

import (
	"fmt"
	"math/big"
	"strings"
)

// sizeUnits maps lower-cased unit suffixes to bytes. Bare letters and "B"
// suffixes are decimal, as in SI (1G = 10^9); the "i" forms are binary, as
// in IEC (1GiB = 2^30). Kubernetes quantities read the same way.
var sizeUnits = map[string]uint64{
	"": 1, "b": 1,
	"k": 1e3, "kb": 1e3, "ki": 1 << 10, "kib": 1 << 10,
	"m": 1e6, "mb": 1e6, "mi": 1 << 20, "mib": 1 << 20,
	"g": 1e9, "gb": 1e9, "gi": 1 << 30, "gib": 1 << 30,
	"t": 1e12, "tb": 1e12, "ti": 1 << 40, "tib": 1 << 40,
}

// ParseSize parses a byte size such as "512MiB", "2GiB", "1.5G", "500M",
// "0" or "1048576". K, M, G and T (with or without B) are powers of 1000;
// Ki, Mi, Gi and Ti (with or without B) are powers of 1024; a bare number
// is bytes. Units ignore case, a space may separate them from the number,
// and fractions round down to whole bytes.
func ParseSize(s string) (uint64, error) {
	trimmed := strings.TrimSpace(s)
	end := strings.IndexFunc(trimmed, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if end < 0 {
		end = len(trimmed)
	}
	number, unit := trimmed[:end], strings.TrimSpace(trimmed[end:])

	whole, frac, hasPoint := strings.Cut(number, ".")
	if whole == "" || !isDigits(whole) || (hasPoint && (frac == "" || !isDigits(frac))) {
		return 0, fmt.Errorf("size %q: want a number such as 512 or 1.5, then an optional unit", s)
	}
	multiplier, ok := sizeUnits[strings.ToLower(unit)]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q (want B, K, KiB, M, MiB, G, GiB, T or TiB)", s, unit)
	}

	// whole.frac × multiplier, exactly, as (whole‖frac × multiplier) / 10^len(frac).
	n, _ := new(big.Int).SetString(whole+frac, 10)
	n.Mul(n, new(big.Int).SetUint64(multiplier))
	n.Quo(n, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(frac))), nil))
	if !n.IsUint64() {
		return 0, fmt.Errorf("size %q: more than %d bytes", s, uint64(1<<64-1))
	}
	return n.Uint64(), nil
}

func isDigits(s string) bool {
	return strings.Trim(s, "0123456789") == ""
}
