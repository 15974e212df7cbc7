package server

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits of the tokens file.
const (
	// MinTokenLength is the shortest bearer token accepted: shorter ones are
	// guessable.
	MinTokenLength = 16
	maxTokenLength = 1024
	// maxPrincipalName is the longest principal name, in bytes.
	maxPrincipalName = 128
	maxTokensFile    = 1 << 20
)

// Tokens is an immutable set of bearer tokens, each naming a principal and
// its role. Only SHA-256 hashes of the tokens are kept, and a token is
// looked up by comparing its hash with every entry in constant time, so
// neither the time a lookup takes nor a memory dump tells the tokens.
//
// The file format ([ParseTokens]) is one token a line:
//
//	# comment
//	TOKEN PRINCIPAL ROLE [max_leases=N]
//
// Fields are separated by spaces or tabs; ROLE is client or admin; a token
// is 16 to 1024 printable ASCII characters; PRINCIPAL is 1 to 128 printable
// characters. Several tokens may name one principal (to rotate them), with
// roles of their own; max_leases, if given on more than one of its lines,
// must agree.
type Tokens struct {
	entries   []tokenEntry
	maxLeases map[string]int
}

type tokenEntry struct {
	hash      [sha256.Size]byte
	principal Principal
}

// LoadTokens reads a tokens file.
func LoadTokens(path string) (*Tokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	t, err := ParseTokens(io.LimitReader(f, maxTokensFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// ParseTokens parses the tokens file format (see [Tokens]). Errors name the
// line and never quote a token.
func ParseTokens(r io.Reader) (*Tokens, error) {
	t := &Tokens{maxLeases: make(map[string]int)}
	seen := make(map[[sha256.Size]byte]int) // token hash → line
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	size := 0
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if size += len(line) + 1; size > maxTokensFile {
			return nil, fmt.Errorf("over %d bytes", maxTokensFile)
		}
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		if len(fields) < 3 || len(fields) > 4 {
			return nil, fmt.Errorf("line %d: want TOKEN PRINCIPAL ROLE [max_leases=N], got %d fields", n, len(fields))
		}
		token, name, roleName := fields[0], fields[1], fields[2]
		if err := checkToken(token); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if err := checkPrincipalName(name); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		role, err := ParseRole(roleName)
		if err != nil {
			// Not quoted: a line with its fields out of order could put
			// a token there.
			return nil, fmt.Errorf("line %d: the third field must be the role, client or admin", n)
		}
		if len(fields) == 4 {
			v, ok := strings.CutPrefix(fields[3], "max_leases=")
			limit, err := strconv.Atoi(v)
			if !ok || err != nil || limit < 1 {
				return nil, fmt.Errorf("line %d: the fourth field, if any, must be max_leases=N with N ≥ 1", n)
			}
			if prev, ok := t.maxLeases[name]; ok && prev != limit {
				return nil, fmt.Errorf("line %d: principal %q has max_leases=%d here and %d on an earlier line", n, name, limit, prev)
			}
			t.maxLeases[name] = limit
		}
		h := sha256.Sum256([]byte(token))
		if first, ok := seen[h]; ok {
			return nil, fmt.Errorf("line %d: the same token as on line %d", n, first)
		}
		seen[h] = n
		t.entries = append(t.entries, tokenEntry{hash: h, principal: Principal{Name: name, Role: role}})
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, errors.New("a line is over 64 KiB")
		}
		return nil, err
	}
	if len(t.entries) == 0 {
		return nil, errors.New("no tokens")
	}
	return t, nil
}

func checkToken(tok string) error {
	if len(tok) < MinTokenLength {
		return fmt.Errorf("token shorter than %d characters: use a random one, such as `openssl rand -hex 32`", MinTokenLength)
	}
	if len(tok) > maxTokenLength {
		return fmt.Errorf("token longer than %d characters", maxTokenLength)
	}
	for i := 0; i < len(tok); i++ {
		if tok[i] < 0x21 || tok[i] > 0x7e {
			return errors.New("token holds a character that is not printable ASCII")
		}
	}
	return nil
}

// checkPrincipalName accepts 1-128 bytes of printable UTF-8; a principal
// named by a client certificate passes the same check.
func checkPrincipalName(name string) error {
	if name == "" || len(name) > maxPrincipalName {
		return fmt.Errorf("principal name must be 1-%d bytes", maxPrincipalName)
	}
	if !utf8.ValidString(name) {
		return errors.New("principal name is not UTF-8")
	}
	for _, r := range name {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return fmt.Errorf("principal name %.40q holds a space or an unprintable character", name)
		}
	}
	return nil
}

// Len is the number of tokens.
func (t *Tokens) Len() int { return len(t.entries) }

// MaxLeases is the principal's max_leases, or 0 when the file sets none.
func (t *Tokens) MaxLeases(principal string) int { return t.maxLeases[principal] }

// lookup finds the principal of a token. Every entry is compared, in
// constant time, whether or not one matched already.
func (t *Tokens) lookup(token string) (Principal, bool) {
	h := sha256.Sum256([]byte(token))
	var p Principal
	found := 0
	for i := range t.entries {
		if subtle.ConstantTimeCompare(h[:], t.entries[i].hash[:]) == 1 {
			p, found = t.entries[i].principal, 1
		}
	}
	return p, found == 1
}
