// Command client is the command-line client of the browser-lease broker.
//
// It leases a browser and drives its page (`client lease`), and lets an
// operator inspect and steer the broker (`leases`, `lease-info`, `revoke`,
// `stats`, `drain`, `undrain`, `wait-idle`, `health`). Kubernetes probes
// and preStop hooks run `health`, `drain` and `wait-idle`: see deploy/. Output is for people by default; --json prints one JSON document
// per command for scripts. The usage text below is the reference, including
// the exit codes.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/browserbroker/broker/client"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

const (
	defaultAddr    = "localhost:7070"
	defaultTimeout = 30 * time.Second
)

// Exit codes; documented in usage.
const (
	exitOK       = 0
	exitFailure  = 1  // a failure that is not a gRPC status
	exitUsage    = 2  // bad command line
	exitLeaseEnd = 3  // the lease ended for another reason than our release
	exitNotReady = 4  // health: not SERVING; wait-idle: still busy at --timeout
	exitRPC      = 10 // plus the gRPC code
)

const usage = `Usage: client [global flags] <command> [flags] [args]

Command-line client of the browser-lease broker.

Commands:
  lease --url URL [flags]    lease a browser, drive its page, give it back
  leases [--label k=v]... [--fleet]
                             list the live leases (of every broker of the
                             fleet, with --fleet)
  lease-info ID              describe one lease
  revoke ID [--message M]    revoke a lease (its holder sees REVOKED)
  stats [--fleet]            capacity, counters and the lease invariant
                             (summed over the fleet, and its members, with
                             --fleet)
  sessions                   list the sticky sessions: held, warm or saved
  delete-session KEY         end a sticky session: its lease is revoked, its
                             context closed, its saved state removed
  drain                      stop granting leases: new and queued acquires
                             fail with UNAVAILABLE, live leases go on, the
                             LeaseService health turns NOT_SERVING
  undrain                    grant leases again
  wait-idle [--interval D]   wait until no lease is active or opening, for
                             at most --timeout; prints the count as it changes
  health [--service NAME]    check the broker's gRPC health; exit 0 when
                             SERVING, 4 when not (no credentials needed)
  help                       print this text

Global flags (before or after the command):
  --addr HOST:PORT   broker address (default localhost:7070; $BROKER_ADDR
                     replaces that default)
  --json             machine output: one JSON document per command on stdout
  --timeout D        time limit of each unary call, such as 10s (default 30s)
  --token T          bearer token for a broker with --auth-tokens ($BROKER_TOKEN
                     replaces the default, none; prefer it: a flag shows in ps)
  --tls              connect with TLS, verifying the broker with the system's
                     roots (implied by the other --tls-* flags)
  --tls-ca FILE      verify the broker's certificate with this PEM CA file
  --tls-server-name NAME
                     name to verify in the broker's certificate (default: the
                     host of --addr)
  --tls-cert FILE, --tls-key FILE
                     client certificate and key, for a broker with --client-ca
  --version          print the version and exit
  -h, --help         print this text and exit

lease flags (steps run in this order: navigate, wait-for, text, eval,
screenshot; then the lease is released and the reason it ended is printed):
  --url URL            page to load (required)
  --wait-for SELECTOR  wait until an element matching SELECTOR is visible
  --text SELECTOR      print the inner text of each matching element
                       (repeatable)
  --eval JS            evaluate a JavaScript expression and print its JSON
                       value (repeatable)
  --screenshot FILE    write a PNG screenshot of the page to FILE
  --full-page          screenshot the whole page, not only the viewport
  --ttl D              idle TTL, such as 60s (default: the broker's)
  --wait D             longest wait in the queue, such as 30s (default: the
                       broker's)
  --label k=v          label the lease (repeatable)
  --user-agent UA      User-Agent of the lease's browser context
  --viewport WxH       viewport size, such as 1280x720 (default 1280x720)
  Queue positions go to stderr while waiting (not with --json). Ctrl-C ends
  the lease stream; the broker reclaims the lease.

leases flags:
  --label k=v          only leases with this label (repeatable)

revoke flags:
  --message M          detail recorded with the reclaim and sent to the holder

wait-idle flags (run it after drain, or new leases may keep the broker busy):
  --timeout D          here the longest wait in all, each poll included
                       (default 30s)
  --interval D         time between two GetStats polls (default 1s)

health flags:
  --service NAME       the health service to check (default
                       browserbroker.v1.LeaseService: NOT_SERVING while the
                       broker drains or stops, for readiness probes; "" is
                       the broker as a whole, SERVING until it stops, for
                       liveness probes)

JSON output: API messages are printed as protojson with proto field names,
full enum names (RECLAIM_REASON_RELEASED) and 64-bit integers as strings.
lease prints one document once the lease was granted, also on failure (then
with an "error" field).

Exit codes:
  0      success
  1      failure outside gRPC (such as writing the screenshot file, or a
         lease stream that ended without a reason)
  2      usage error
  3      lease: the lease ended for another reason than our release
         (revoked, TTL expired, max lifetime, browser crash, shutdown)
  4      health: the service is not SERVING; wait-idle: leases were still
         active or opening when --timeout passed
  10+N   a call failed with gRPC code N, such as 11 CANCELLED (Ctrl-C),
         13 INVALID_ARGUMENT, 14 DEADLINE_EXCEEDED, 15 NOT_FOUND,
         18 RESOURCE_EXHAUSTED (no capacity in time), 19 FAILED_PRECONDITION,
         20 ABORTED, 24 UNAVAILABLE (broker unreachable)
Errors go to stderr as "client: <what>: <gRPC code>: <message>".
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs the client with the arguments after the program name and returns
// the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &cli{
		stdout:  stdout,
		stderr:  stderr,
		addr:    defaultAddr,
		timeout: defaultTimeout,
	}
	if env := os.Getenv("BROKER_ADDR"); env != "" {
		c.addr = env
	}
	c.token = os.Getenv("BROKER_TOKEN")
	return c.exit(c.dispatch(ctx, args))
}

// cli holds the global flags and the output streams of one run.
type cli struct {
	stdout, stderr io.Writer

	addr        string
	json        bool
	timeout     time.Duration
	showVersion bool

	token           string
	useTLS          bool
	tlsCA           string
	tlsServerName   string
	tlsCert, tlsKey string
}

var (
	errHelp    = errors.New("help requested")
	errVersion = errors.New("version requested")
)

// usageError is a bad command line: exit code 2 and the usage text.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitError carries the exit code and the complete message for stderr.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func (c *cli) dispatch(ctx context.Context, args []string) error {
	fs := c.flagSet("client")
	rest, err := c.parse(fs, args, false)
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		return usageErrorf("missing command")
	}
	name, rest := rest[0], rest[1:]
	switch name {
	case "lease":
		return c.lease(ctx, rest)
	case "leases":
		return c.leases(ctx, rest)
	case "lease-info":
		return c.leaseInfo(ctx, rest)
	case "revoke":
		return c.revoke(ctx, rest)
	case "stats":
		return c.stats(ctx, rest)
	case "sessions":
		return c.sessions(ctx, rest)
	case "delete-session":
		return c.deleteSession(ctx, rest)
	case "drain":
		return c.drain(ctx, rest)
	case "undrain":
		return c.undrain(ctx, rest)
	case "wait-idle":
		return c.waitIdle(ctx, rest)
	case "health":
		return c.health(ctx, rest)
	case "help":
		return errHelp
	default:
		return usageErrorf("unknown command %q", name)
	}
}

func (c *cli) exit(err error) int {
	var ue *usageError
	var ee *exitError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errHelp):
		fmt.Fprint(c.stdout, usage)
		return exitOK
	case errors.Is(err, errVersion):
		fmt.Fprintf(c.stdout, "client %s\n", buildVersion())
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(c.stderr, "client: %s\n\n%s", ue.msg, usage)
		return exitUsage
	case errors.As(err, &ee):
		fmt.Fprintln(c.stderr, ee.msg)
		return ee.code
	default:
		fmt.Fprintf(c.stderr, "client: %v\n", err)
		return exitFailure
	}
}

// buildVersion prefers the -ldflags version, then the module version the
// binary was built at (go install ...@v1.2.3).
func buildVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return version
}

// flagSet returns a flag set for one command with the global flags on it, so
// they are accepted before and after the command name.
func (c *cli) flagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&c.addr, "addr", c.addr, "broker address")
	fs.BoolVar(&c.json, "json", c.json, "machine output")
	fs.DurationVar(&c.timeout, "timeout", c.timeout, "time limit of each unary call")
	fs.BoolVar(&c.showVersion, "version", c.showVersion, "print the version")
	fs.StringVar(&c.token, "token", c.token, "bearer token")
	fs.BoolVar(&c.useTLS, "tls", c.useTLS, "connect with TLS")
	fs.StringVar(&c.tlsCA, "tls-ca", c.tlsCA, "PEM CA file")
	fs.StringVar(&c.tlsServerName, "tls-server-name", c.tlsServerName, "name in the broker's certificate")
	fs.StringVar(&c.tlsCert, "tls-cert", c.tlsCert, "client certificate")
	fs.StringVar(&c.tlsKey, "tls-key", c.tlsKey, "client key")
	return fs
}

// parse parses args with fs. With interspersed, flags may follow positional
// arguments (`revoke ID --message M`); without it, parsing stops at the first
// positional argument (the command name).
func (c *cli) parse(fs *flag.FlagSet, args []string, interspersed bool) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, errHelp
			}
			if fs.Name() == "client" {
				return nil, usageErrorf("%v", err)
			}
			return nil, usageErrorf("%s: %v", fs.Name(), err)
		}
		rest := fs.Args()
		if !interspersed || len(rest) == 0 {
			positional = append(positional, rest...)
			break
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			positional = append(positional, rest...)
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	if c.showVersion {
		return nil, errVersion
	}
	if c.timeout <= 0 {
		return nil, usageErrorf("--timeout must be positive, not %v", c.timeout)
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return nil, usageErrorf("--tls-cert and --tls-key go together")
	}
	return positional, nil
}

// dial returns a client of the broker; it connects lazily, so an
// unreachable broker shows up as UNAVAILABLE on the first call.
func (c *cli) dial() (*client.Client, error) {
	var opts []client.Option
	if c.token != "" {
		opts = append(opts, client.WithToken(c.token))
	}
	if c.wantTLS() {
		cfg, err := c.tlsConfig()
		if err != nil {
			return nil, err
		}
		opts = append(opts, client.WithTLS(cfg))
	}
	cl, err := client.Dial(c.addr, opts...)
	if err != nil {
		return nil, usageErrorf("--addr %q: %v", c.addr, err)
	}
	return cl, nil
}

// wantTLS says whether any --tls* flag asks for TLS.
func (c *cli) wantTLS() bool {
	return c.useTLS || c.tlsCA != "" || c.tlsServerName != "" || c.tlsCert != ""
}

// adminCall dials the broker, makes one call under --timeout and closes
// the connection: an admin command's whole exchange. A failed call's error
// names what (see rpcError).
func adminCall[T any](ctx context.Context, c *cli, what string, call func(context.Context, *client.Client) (T, error)) (T, error) {
	var zero T
	cl, err := c.dial()
	if err != nil {
		return zero, err
	}
	defer cl.Close()
	v, err := callUnary(ctx, c.timeout, func(ctx context.Context) (T, error) { return call(ctx, cl) })
	if err != nil {
		return zero, rpcError(what, err)
	}
	return v, nil
}

// callUnary runs one unary call under the --timeout limit.
func callUnary[T any](ctx context.Context, timeout time.Duration, call func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return call(ctx)
}

// tlsConfig builds the TLS configuration of the --tls-* flags.
func (c *cli) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.tlsServerName}
	if c.tlsCA != "" {
		pem, err := os.ReadFile(c.tlsCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", c.tlsCA)
		}
	}
	if c.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
