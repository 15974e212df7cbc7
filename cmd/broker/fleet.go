package main

import (
	"crypto/rand"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/browserbroker/broker/internal/fleet"
	"github.com/browserbroker/broker/internal/lease"
)

// fleetConfig holds the flags of the Redis fleet.
type fleetConfig struct {
	redisURL   string
	id         string
	advertise  string
	ttl        time.Duration
	ca         string
	serverName string
}

func (f *fleetConfig) register(fs *flag.FlagSet) {
	fs.StringVar(&f.redisURL, "redis", "", "join a fleet of brokers on this Redis (redis://[user:password@]host:port/db, rediss:// for TLS); default: a broker on its own")
	fs.StringVar(&f.id, "broker-id", "", "this broker's id in the fleet and in its lease ids: 1-40 of a-z, 0-9, '-' (default: from the host name)")
	fs.StringVar(&f.advertise, "advertise-addr", "", "host:port where the fleet's other brokers reach this one (default: --addr, when it names a host)")
	fs.DurationVar(&f.ttl, "fleet-ttl", 5*time.Second, "a broker that stops renewing its registration for this long drops out of the fleet (renewed every third of it)")
	fs.StringVar(&f.serverName, "fleet-server-name", "", "with --tls-cert: the name the other brokers' certificates must carry (default: the host of each one's advertised address, which is often a pod IP the certificate does not name)")
	fs.StringVar(&f.ca, "fleet-ca", "", "PEM CA file to verify the other brokers' TLS certificates (default: the system's roots); with --tls-cert the brokers call each other over TLS, presenting that certificate")
}

var notIDChars = regexp.MustCompile(`[^a-z0-9-]+`)

// defaultBrokerID makes an id from the host name (a pod's name in
// Kubernetes), else a random one.
func defaultBrokerID() string {
	h, _ := os.Hostname()
	id := strings.Trim(notIDChars.ReplaceAllString(strings.ToLower(h), "-"), "-")
	if len(id) > 40 {
		id = strings.Trim(id[len(id)-40:], "-")
	}
	if fleet.ValidID(id) != nil {
		id = "b-" + strings.ToLower(rand.Text()[:12])
	}
	return id
}

// check fills the defaults and checks the flags together.
func (f *fleetConfig) check(tls bool) error {
	if f.redisURL == "" {
		if f.id != "" || f.advertise != "" || f.ca != "" || f.serverName != "" {
			return errors.New("--broker-id, --advertise-addr, --fleet-ca and --fleet-server-name need --redis")
		}
		return nil
	}
	if _, err := redis.ParseURL(f.redisURL); err != nil {
		return fmt.Errorf("--redis: %w", err)
	}
	if f.id == "" {
		f.id = defaultBrokerID()
	}
	if err := fleet.ValidID(f.id); err != nil {
		return fmt.Errorf("--broker-id: %w", err)
	}
	if !tls && (f.ca != "" || f.serverName != "") {
		return errors.New("--fleet-ca and --fleet-server-name are for TLS between brokers: they need --tls-cert")
	}
	if f.ttl < 300*time.Millisecond {
		return errors.New("--fleet-ttl must be at least 300ms")
	}
	return nil
}

// advertised is --advertise-addr, else the listen address when it names a
// host other brokers could reach.
func (f *fleetConfig) advertised(lis net.Addr, flagAddr string) (string, error) {
	if f.advertise != "" {
		if _, _, err := net.SplitHostPort(f.advertise); err != nil {
			return "", fmt.Errorf("--advertise-addr: %w", err)
		}
		return f.advertise, nil
	}
	host, _, err := net.SplitHostPort(flagAddr)
	if err != nil || host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified() {
		return "", fmt.Errorf("--addr %s names no host the fleet can reach: give --advertise-addr", flagAddr)
	}
	_, port, _ := net.SplitHostPort(lis.String())
	return net.JoinHostPort(host, port), nil
}

// dialOptions are the credentials of calls to the other brokers: TLS when
// this broker serves TLS, presenting its own certificate as it is now
// (reloaded on SIGHUP) to brokers that want client certificates; else
// plaintext.
func (f *fleetConfig) dialOptions(sec *security) ([]grpc.DialOption, error) {
	if sec.tls == nil {
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.serverName}
	if f.ca != "" {
		var err error
		if cfg.RootCAs, err = certPool("--fleet-ca", f.ca); err != nil {
			return nil, err
		}
	}
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &sec.current.Load().Certificates[0], nil
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}, nil
}

// join makes this broker's membership of the fleet: lease ids name this
// broker, and its registration, once Started, reports the load of the
// lease manager leases returns (which must exist by then).
func (f *fleetConfig) join(leases func() *lease.Manager, addr string, log *zap.Logger) (*fleet.Fleet, *redis.Client, error) {
	opt, err := redis.ParseURL(f.redisURL)
	if err != nil {
		return nil, nil, fmt.Errorf("--redis: %w", err)
	}
	// Fail fast while Redis is away: the broker serves alone meanwhile.
	opt.MaxRetries = 1
	opt.DialTimeout = time.Second
	rdb := redis.NewClient(opt)
	fl, err := fleet.New(fleet.Config{Redis: rdb, ID: f.id, Address: addr, TTL: f.ttl, Logger: log,
		// The lease manager's load is what the fleet registers, field for
		// field (the conversion stops compiling if they part).
		Load: func() fleet.Load { return fleet.Load(leases().Load()) },
		Sessions: func() []string {
			var keys []string
			for _, s := range leases().Sessions() {
				keys = append(keys, s.Key)
			}
			return keys
		}})
	if err != nil {
		rdb.Close()
		return nil, nil, err
	}
	return fl, rdb, nil
}
