package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The manifests are checked without a cluster, Chromium or network: they
// are decoded, and the flags and subcommands they name are looked up in
// the broker's and the client's --help, built from this tree.

const manifestDir = "kubernetes"

// notInKustomization are manifests kept out of `apply -k` on purpose.
var notInKustomization = []string{"secret-example.yaml"}

// wantObjects are every kind/name the manifests hold, by file.
var wantObjects = map[string][]string{
	"broker-deployment.yaml": {"Deployment/broker"},
	"broker-service.yaml":    {"Service/broker"},
	"broker-pdb.yaml":        {"PodDisruptionBudget/broker"},
	"redis.yaml":             {"PersistentVolumeClaim/redis-data", "Deployment/redis", "Service/redis", "NetworkPolicy/redis"},
	"secret-example.yaml":    {"Secret/broker-tokens", "Secret/broker-tls"},
}

// object is one decoded document: its header, and the raw node to decode
// the rest of it from.
type object struct {
	file       string
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string            `yaml:"name"`
		Namespace string            `yaml:"namespace"`
		Labels    map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	node yaml.Node
}

func (o object) String() string { return o.file + ": " + o.Kind + "/" + o.Metadata.Name }

// decode decodes the whole object into v.
func (o object) decode(t *testing.T, v any) {
	t.Helper()
	if err := o.node.Decode(v); err != nil {
		t.Fatalf("%v: decode: %v", o, err)
	}
}

// readManifests decodes every document of every YAML file in dir.
func readManifests(t *testing.T) map[string][]object {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(manifestDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", manifestDir, err)
	}
	out := map[string][]object{}
	for _, path := range files {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for i := 0; ; i++ {
			var o object
			err := dec.Decode(&o.node)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: document %d does not parse: %v", path, i, err)
			}
			if o.node.Kind == 0 {
				continue // an empty document
			}
			if err := o.node.Decode(&o); err != nil {
				t.Fatalf("%s: document %d: %v", path, i, err)
			}
			o.file = filepath.Base(path)
			out[o.file] = append(out[o.file], o)
		}
	}
	return out
}

// find returns the one object of kind and name.
func find(t *testing.T, manifests map[string][]object, kind, name string) object {
	t.Helper()
	for _, objs := range manifests {
		for _, o := range objs {
			if o.Kind == kind && o.Metadata.Name == name {
				return o
			}
		}
	}
	t.Fatalf("no %s/%s in %s", kind, name, manifestDir)
	return object{}
}

func TestManifestsParse(t *testing.T) {
	manifests := readManifests(t)
	got := map[string][]string{}
	for file, objs := range manifests {
		for _, o := range objs {
			if o.Kind == "Kustomization" {
				continue
			}
			if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
				t.Errorf("%s: a document lacks apiVersion (%q), kind (%q) or metadata.name (%q)", file, o.APIVersion, o.Kind, o.Metadata.Name)
			}
			if o.Metadata.Namespace != "" {
				t.Errorf("%v names namespace %q; the manifests are namespace-agnostic", o, o.Metadata.Namespace)
			}
			got[file] = append(got[file], o.Kind+"/"+o.Metadata.Name)
		}
	}
	if !maps.EqualFunc(got, wantObjects, slices.Equal) {
		t.Errorf("manifests hold\n%v\nwant\n%v", got, wantObjects)
	}
}

func TestKustomizationListsTheManifests(t *testing.T) {
	manifests := readManifests(t)
	objs := manifests["kustomization.yaml"]
	if len(objs) != 1 || objs[0].Kind != "Kustomization" || objs[0].APIVersion != "kustomize.config.k8s.io/v1beta1" {
		t.Fatalf("kustomization.yaml = %v, want one Kustomization", objs)
	}
	var k struct {
		Namespace string   `yaml:"namespace"`
		Resources []string `yaml:"resources"`
	}
	objs[0].decode(t, &k)
	if k.Namespace != "" {
		t.Errorf("kustomization.yaml sets namespace %q; the manifests are namespace-agnostic", k.Namespace)
	}
	var want []string
	for file := range manifests {
		if file != "kustomization.yaml" && !slices.Contains(notInKustomization, file) {
			want = append(want, file)
		}
	}
	slices.Sort(want)
	if got := slices.Sorted(slices.Values(k.Resources)); !slices.Equal(got, want) {
		t.Errorf("kustomization.yaml resources = %v, want every manifest but %v: %v", k.Resources, notInKustomization, want)
	}
}

// The parts of a Deployment the tests look at.
type deployment struct {
	Spec struct {
		Replicas int `yaml:"replicas"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
				SecurityContext               struct {
					RunAsNonRoot bool `yaml:"runAsNonRoot"`
					RunAsUser    int  `yaml:"runAsUser"`
				} `yaml:"securityContext"`
				Containers []container `yaml:"containers"`
				Volumes    []volume    `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type container struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Env   []struct {
		Name      string `yaml:"name"`
		ValueFrom struct {
			FieldRef struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
			SecretKeyRef struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	StartupProbe   *probe `yaml:"startupProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	Lifecycle      struct {
		PreStop *probe `yaml:"preStop"` // a handler: exec, like a probe's
	} `yaml:"lifecycle"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type probe struct {
	Exec *struct {
		Command []string `yaml:"command"`
	} `yaml:"exec"`
	TimeoutSeconds int `yaml:"timeoutSeconds"`
}

type volume struct {
	Name     string `yaml:"name"`
	EmptyDir *struct {
		Medium string `yaml:"medium"`
	} `yaml:"emptyDir"`
	Projected *struct {
		Sources []struct {
			Secret *struct {
				Name  string `yaml:"name"`
				Items []struct {
					Key  string `yaml:"key"`
					Path string `yaml:"path"`
				} `yaml:"items"`
			} `yaml:"secret"`
		} `yaml:"sources"`
	} `yaml:"projected"`
}

func brokerDeployment(t *testing.T, manifests map[string][]object) (deployment, container) {
	t.Helper()
	var d deployment
	find(t, manifests, "Deployment", "broker").decode(t, &d)
	cs := d.Spec.Template.Spec.Containers
	if len(cs) != 1 || cs[0].Name != "broker" {
		t.Fatalf("Deployment/broker containers = %v, want one named broker", cs)
	}
	return d, cs[0]
}

// flagValue is the value of --name=value in args, and whether it is there.
func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func TestBrokerDeployment(t *testing.T) {
	manifests := readManifests(t)
	d, c := brokerDeployment(t, manifests)
	pod := d.Spec.Template.Spec

	if d.Spec.Replicas != 3 {
		t.Errorf("Deployment/broker replicas = %d, want 3", d.Spec.Replicas)
	}
	if !pod.SecurityContext.RunAsNonRoot || pod.SecurityContext.RunAsUser == 0 {
		t.Errorf("Deployment/broker securityContext = %+v, want runAsNonRoot and a non-root runAsUser", pod.SecurityContext)
	}

	// Every broker flag exists; they are all --name=value, so that this
	// test can read them.
	help := brokerHelp(t)
	for _, arg := range c.Args {
		name, _, _ := strings.Cut(strings.TrimPrefix(arg, "--"), "=")
		if !strings.HasPrefix(arg, "--") || !strings.Contains(arg, "=") {
			t.Errorf("broker arg %q is not --name=value", arg)
			continue
		}
		if !hasFlag(help, name) {
			t.Errorf("broker arg %q: cmd/broker has no flag --%s", arg, name)
		}
	}
	for _, name := range []string{"addr", "metrics-addr", "redis", "advertise-addr", "max-leases", "auth-tokens", "tls-cert", "tls-key"} {
		if _, ok := flagValue(c.Args, name); !ok {
			t.Errorf("broker args lack --%s", name)
		}
	}
	if v, _ := flagValue(c.Args, "advertise-addr"); v != "$(POD_IP):7070" {
		t.Errorf("--advertise-addr=%s, want $(POD_IP):7070", v)
	}

	// $(VAR) in args are the container's env; POD_IP is the pod's IP.
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.ValueFrom.FieldRef.FieldPath
	}
	for _, arg := range c.Args {
		for _, m := range regexp.MustCompile(`\$\(([A-Z_]+)\)`).FindAllStringSubmatch(arg, -1) {
			if _, ok := env[m[1]]; !ok {
				t.Errorf("broker arg %q uses $(%s), which the container's env lacks", arg, m[1])
			}
		}
	}
	if env["POD_IP"] != "status.podIP" {
		t.Errorf("env POD_IP comes from %q, want the downward API's status.podIP", env["POD_IP"])
	}

	// The files the flags name come from Secrets mounted there.
	files := secretFiles(t, pod.Volumes, c)
	for _, name := range []string{"auth-tokens", "tls-cert", "tls-key"} {
		path, _ := flagValue(c.Args, name)
		if _, ok := files[path]; !ok {
			t.Errorf("--%s=%s: no Secret item is mounted there (mounted: %v)", name, path, slices.Sorted(maps.Keys(files)))
		}
	}

	// /dev/shm is memory.
	shm := false
	for _, m := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			if m.MountPath == "/dev/shm" && v.Name == m.Name && v.EmptyDir != nil && v.EmptyDir.Medium == "Memory" {
				shm = true
			}
		}
	}
	if !shm {
		t.Error("Deployment/broker mounts no memory emptyDir at /dev/shm")
	}

	// Memory: README's figures, about 320 MiB plus 65 MiB or more a lease.
	maxLeases, err := strconv.Atoi(must(flagValue(c.Args, "max-leases")))
	if err != nil {
		t.Fatalf("--max-leases: %v", err)
	}
	request, limit := mebibytes(t, c.Resources.Requests["memory"]), mebibytes(t, c.Resources.Limits["memory"])
	if floor := 320 + 65*maxLeases; request < floor || limit < request {
		t.Errorf("memory request %d MiB, limit %d MiB; want request >= 320 + 65 x %d = %d MiB and limit >= request", request, limit, maxLeases, floor)
	}
}

// must drops the ok of flagValue.
func must(v string, _ bool) string { return v }

// secretFiles are the files that Secret items give the container: the
// mount path joined with each projected or plain secret item's path.
func secretFiles(t *testing.T, volumes []volume, c container) map[string]bool {
	t.Helper()
	files := map[string]bool{}
	for _, m := range c.VolumeMounts {
		for _, v := range volumes {
			if v.Name != m.Name || v.Projected == nil {
				continue
			}
			for _, src := range v.Projected.Sources {
				if src.Secret == nil {
					continue
				}
				for _, it := range src.Secret.Items {
					files[filepath.Join(m.MountPath, it.Path)] = true
				}
			}
		}
	}
	return files
}

// mebibytes parses a Kubernetes quantity in Mi or Gi.
func mebibytes(t *testing.T, q string) int {
	t.Helper()
	for suffix, mult := range map[string]int{"Mi": 1, "Gi": 1024} {
		if n, ok := strings.CutSuffix(q, suffix); ok {
			v, err := strconv.Atoi(n)
			if err == nil {
				return v * mult
			}
		}
	}
	t.Fatalf("memory quantity %q: want NMi or NGi", q)
	return 0
}

// clientCommand is one run of the client in a probe or hook: its global
// and command flags and the subcommand.
type clientCommand struct {
	args       []string // after "client"
	subcommand string
}

func parseClientCommand(t *testing.T, where string, argv []string) clientCommand {
	t.Helper()
	if len(argv) == 0 || argv[0] != "client" {
		t.Fatalf("%s runs %q, want client", where, argv)
	}
	cc := clientCommand{args: argv[1:]}
	for _, a := range cc.args {
		if !strings.HasPrefix(a, "-") {
			cc.subcommand = a
			break
		}
		if !strings.Contains(a, "=") {
			t.Errorf("%s: client flag %q is not --name=value", where, a)
		}
	}
	// The client parses the whole line and stops at --help with exit 0,
	// before any call; an unknown command or flag is exit 2.
	out, err := exec.Command(clientBinary(t), append(slices.Clone(cc.args), "--help")...).CombinedOutput()
	if err != nil {
		first, _, _ := strings.Cut(string(out), "\n") // the error; the usage text follows
		t.Errorf("%s: `client %s --help`: %v: %s", where, strings.Join(cc.args, " "), err, first)
	}
	return cc
}

func TestProbesAndPreStop(t *testing.T) {
	manifests := readManifests(t)
	d, c := brokerDeployment(t, manifests)
	files := secretFiles(t, d.Spec.Template.Spec.Volumes, c)

	checkTLS := func(where string, cc clientCommand) {
		t.Helper()
		ca, ok := flagValue(cc.args, "tls-ca")
		if !ok || !files[ca] {
			t.Errorf("%s: --tls-ca=%q is not a mounted Secret file", where, ca)
		}
		if _, ok := flagValue(cc.args, "tls-server-name"); !ok {
			t.Errorf("%s: no --tls-server-name: the certificate does not name localhost", where)
		}
	}
	probes := []struct {
		where   string
		probe   *probe
		service string // the health service it must check
	}{
		{"startupProbe", c.StartupProbe, ""},
		{"readinessProbe", c.ReadinessProbe, "browserbroker.v1.LeaseService"},
		{"livenessProbe", c.LivenessProbe, ""},
	}
	for _, p := range probes {
		if p.probe == nil || p.probe.Exec == nil {
			t.Errorf("%s is not an exec probe", p.where)
			continue
		}
		cc := parseClientCommand(t, p.where, p.probe.Exec.Command)
		if cc.subcommand != "health" {
			t.Errorf("%s runs client %s, want health", p.where, cc.subcommand)
		}
		service, ok := flagValue(cc.args, "service")
		if !ok {
			service = "browserbroker.v1.LeaseService" // the client's default
		}
		if service != p.service {
			t.Errorf("%s checks health service %q, want %q", p.where, service, p.service)
		}
		checkTLS(p.where, cc)
		if timeout := mustDuration(t, must(flagValue(cc.args, "timeout"))); timeout <= 0 || timeout >= time.Duration(p.probe.TimeoutSeconds)*time.Second {
			t.Errorf("%s: client --timeout=%v, want it under the probe's timeoutSeconds %d", p.where, timeout, p.probe.TimeoutSeconds)
		}
	}

	// preStop: sh -c "client ... drain && client ... wait-idle ...".
	pre := c.Lifecycle.PreStop
	if pre == nil || pre.Exec == nil || len(pre.Exec.Command) != 3 || pre.Exec.Command[0] != "/bin/sh" || pre.Exec.Command[1] != "-c" {
		t.Fatalf("preStop = %+v, want exec /bin/sh -c \"client drain && client wait-idle\"", pre)
	}
	var subcommands []string
	var total time.Duration
	for part := range strings.SplitSeq(pre.Exec.Command[2], "&&") {
		cc := parseClientCommand(t, "preStop", strings.Fields(part))
		subcommands = append(subcommands, cc.subcommand)
		checkTLS("preStop "+cc.subcommand, cc)
		total += mustDuration(t, must(flagValue(cc.args, "timeout")))
	}
	if !slices.Equal(subcommands, []string{"drain", "wait-idle"}) {
		t.Errorf("preStop runs client %v, want drain then wait-idle", subcommands)
	}
	total += mustDuration(t, must(flagValue(c.Args, "shutdown-timeout")))
	grace := time.Duration(d.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	if total >= grace {
		t.Errorf("preStop timeouts plus --shutdown-timeout = %v, want under terminationGracePeriodSeconds %v", total, grace)
	}
	// The admin token for drain and wait-idle.
	token := false
	for _, e := range c.Env {
		token = token || (e.Name == "BROKER_TOKEN" && e.ValueFrom.SecretKeyRef.Name != "")
	}
	if !token {
		t.Error("the broker container has no BROKER_TOKEN from a Secret for the preStop hook's admin calls")
	}
}

func mustDuration(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Errorf("duration %q: %v", s, err)
	}
	return d
}

// selects says whether a selector picks pods with these labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false // selecting everything is never what is meant here
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestSelectors(t *testing.T) {
	manifests := readManifests(t)
	d, _ := brokerDeployment(t, manifests)
	brokerPods := d.Spec.Template.Metadata.Labels
	var r deployment
	find(t, manifests, "Deployment", "redis").decode(t, &r)
	redisPods := r.Spec.Template.Metadata.Labels

	for name, dep := range map[string]deployment{"broker": d, "redis": r} {
		if !selects(dep.Spec.Selector.MatchLabels, dep.Spec.Template.Metadata.Labels) {
			t.Errorf("Deployment/%s selector %v does not match its pods %v", name, dep.Spec.Selector.MatchLabels, dep.Spec.Template.Metadata.Labels)
		}
	}
	if selects(d.Spec.Selector.MatchLabels, redisPods) || selects(r.Spec.Selector.MatchLabels, brokerPods) {
		t.Errorf("the broker and redis Deployments' selectors overlap: %v, %v", d.Spec.Selector.MatchLabels, r.Spec.Selector.MatchLabels)
	}

	var pdb struct {
		Spec struct {
			MaxUnavailable int `yaml:"maxUnavailable"`
			Selector       struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"selector"`
		} `yaml:"spec"`
	}
	find(t, manifests, "PodDisruptionBudget", "broker").decode(t, &pdb)
	if !selects(pdb.Spec.Selector.MatchLabels, brokerPods) || selects(pdb.Spec.Selector.MatchLabels, redisPods) {
		t.Errorf("PodDisruptionBudget/broker selects %v, want the broker pods %v only", pdb.Spec.Selector.MatchLabels, brokerPods)
	}
	if pdb.Spec.MaxUnavailable != 1 {
		t.Errorf("PodDisruptionBudget/broker maxUnavailable = %d, want 1", pdb.Spec.MaxUnavailable)
	}

	type service struct {
		Spec struct {
			Selector map[string]string `yaml:"selector"`
			Ports    []struct {
				Name string `yaml:"name"`
				Port int    `yaml:"port"`
			} `yaml:"ports"`
		} `yaml:"spec"`
	}
	var svc service
	find(t, manifests, "Service", "broker").decode(t, &svc)
	if !selects(svc.Spec.Selector, brokerPods) || selects(svc.Spec.Selector, redisPods) {
		t.Errorf("Service/broker selects %v, want the broker pods %v only", svc.Spec.Selector, brokerPods)
	}
	ports := map[string]int{}
	for _, p := range svc.Spec.Ports {
		ports[p.Name] = p.Port
	}
	if !maps.Equal(ports, map[string]int{"grpc": 7070, "metrics": 9090}) {
		t.Errorf("Service/broker ports = %v, want grpc 7070 and metrics 9090", ports)
	}
	var rsvc service
	find(t, manifests, "Service", "redis").decode(t, &rsvc)
	if !selects(rsvc.Spec.Selector, redisPods) || selects(rsvc.Spec.Selector, brokerPods) {
		t.Errorf("Service/redis selects %v, want the redis pods %v only", rsvc.Spec.Selector, redisPods)
	}

	var np struct {
		Spec struct {
			PodSelector struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"podSelector"`
			Ingress []struct {
				From []struct {
					PodSelector struct {
						MatchLabels map[string]string `yaml:"matchLabels"`
					} `yaml:"podSelector"`
				} `yaml:"from"`
			} `yaml:"ingress"`
		} `yaml:"spec"`
	}
	find(t, manifests, "NetworkPolicy", "redis").decode(t, &np)
	if !selects(np.Spec.PodSelector.MatchLabels, redisPods) || len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].From) != 1 ||
		!selects(np.Spec.Ingress[0].From[0].PodSelector.MatchLabels, brokerPods) {
		t.Errorf("NetworkPolicy/redis = %+v, want the redis pods reachable from the broker pods only", np.Spec)
	}
}

func TestDockerfile(t *testing.T) {
	dockerfile := readFile(t, "Dockerfile")
	makefile := readFile(t, filepath.Join("..", "Makefile"))

	want := regexp.MustCompile(`(?m)^PLAYWRIGHT_VERSION\s*:=\s*(\S+)$`).FindStringSubmatch(makefile)
	got := regexp.MustCompile(`(?m)^ARG PLAYWRIGHT_VERSION=(\S+)$`).FindStringSubmatch(dockerfile)
	if want == nil || got == nil || got[1] != want[1] {
		t.Errorf("Dockerfile's ARG PLAYWRIGHT_VERSION = %v, Makefile's PLAYWRIGHT_VERSION = %v; want equal", got, want)
	}
	if !strings.Contains(dockerfile, `"playwright-core@${PLAYWRIGHT_VERSION}"`) {
		t.Error("Dockerfile does not fetch playwright-core@${PLAYWRIGHT_VERSION}")
	}

	gomod := readFile(t, filepath.Join("..", "go.mod"))
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(gomod)
	if goVersion == nil || !strings.Contains(dockerfile, "FROM golang:"+goVersion[1]+"-bookworm AS build") {
		t.Errorf("Dockerfile's build stage is not golang:%v-bookworm (go.mod's go)", goVersion)
	}

	entry := regexp.MustCompile(`(?m)^ENTRYPOINT (\[.*\])$`).FindStringSubmatch(dockerfile)
	if entry == nil {
		t.Fatal("Dockerfile has no ENTRYPOINT [...]")
	}
	var argv []string
	if err := yaml.Unmarshal([]byte(entry[1]), &argv); err != nil {
		t.Fatalf("ENTRYPOINT %s: %v", entry[1], err)
	}
	help := brokerHelp(t)
	broker := slices.Index(argv, "/usr/local/bin/broker")
	if broker < 0 {
		t.Fatalf("ENTRYPOINT %v does not run /usr/local/bin/broker", argv)
	}
	var flags []string
	for _, a := range argv[broker+1:] {
		if name, ok := strings.CutPrefix(a, "--"); ok {
			name, _, _ = strings.Cut(name, "=")
			flags = append(flags, name)
			if !hasFlag(help, name) {
				t.Errorf("ENTRYPOINT flag %q: cmd/broker has no flag --%s", a, name)
			}
		}
	}
	if !slices.Contains(flags, "driver-dir") || !slices.Contains(flags, "chromium") {
		t.Errorf("ENTRYPOINT %v, want the broker with --driver-dir and --chromium", argv)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// hasFlag says whether a Go flag package's usage text lists -name.
func hasFlag(help, name string) bool {
	return regexp.MustCompile(`(?m)^\s+--?` + regexp.QuoteMeta(name) + `(\s|$)`).MatchString(help)
}

// The binaries are built once, from this tree, for all tests.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func build(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "deploy-test-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/broker", "./cmd/client")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/broker ./cmd/client: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func clientBinary(t *testing.T) string { return filepath.Join(build(t), "client") }

var (
	helpOnce   sync.Once
	brokerText string
)

// brokerHelp is `broker --help`: the flags, one "  -name" line each.
func brokerHelp(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(build(t), "broker")
	helpOnce.Do(func() {
		out, _ := exec.Command(bin, "--help").CombinedOutput() // exit status aside
		brokerText = string(out)
	})
	if !strings.Contains(brokerText, "Usage: broker") || !hasFlag(brokerText, "addr") {
		t.Fatalf("broker --help printed no flags:\n%s", brokerText)
	}
	return brokerText
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}
