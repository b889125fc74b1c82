package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/usher-oidc/usher/config"
)

// Files and names the manifests are expected to agree on.
const (
	k8sDir          = "kubernetes"
	composeFile     = "compose.yaml"
	composeConfig   = "usher.compose.yaml"
	exampleConfig   = "usher.example.yaml"
	envExample      = "usher.env.example"
	dockerfile      = "Dockerfile"
	secretFile      = "kubernetes/secret.yaml"
	kustomization   = "kubernetes/kustomization.yaml"
	configMapKey    = "usher.yaml"
	placeholderMark = "REPLACE_ME"
	wantReplicas    = 3
)

// ---------------------------------------------------------------------------
// Loading

// yamlFiles lists every *.yaml / *.yml under deploy/, slash-separated.
func yamlFiles(t *testing.T) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			out = append(out, filepath.ToSlash(p))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("no YAML files found under deploy/")
	}
	return out
}

// readDocs parses every document of a (possibly multi-document) YAML file,
// skipping empty ones.
func readDocs(t *testing.T, name string) []*yaml.Node {
	t.Helper()
	b, err := os.ReadFile(filepath.FromSlash(name))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []*yaml.Node
	for i := 0; ; i++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", name, i, err)
		}
		if len(n.Content) == 0 || n.Content[0].ShortTag() == "!!null" {
			continue
		}
		docs = append(docs, &n)
	}
	return docs
}

func decodeNode(t *testing.T, where string, n *yaml.Node, v any) {
	t.Helper()
	if err := n.Decode(v); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
}

// object is one Kubernetes document.
type object struct {
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Metadata   objectMeta `yaml:"metadata"`

	file string
	node *yaml.Node
}

type objectMeta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func (o object) String() string { return fmt.Sprintf("%s %s/%s", o.file, o.Kind, o.Metadata.Name) }

// k8sObjects parses every document under kubernetes/.
func k8sObjects(t *testing.T) []object {
	t.Helper()
	var out []object
	for _, f := range yamlFiles(t) {
		if !strings.HasPrefix(f, k8sDir+"/") {
			continue
		}
		for i, n := range readDocs(t, f) {
			var o object
			decodeNode(t, fmt.Sprintf("%s: document %d", f, i), n, &o)
			o.file, o.node = f, n
			out = append(out, o)
		}
	}
	if len(out) == 0 {
		t.Fatal("no Kubernetes documents under deploy/kubernetes/")
	}
	return out
}

// only returns the single object of a kind, failing unless there is exactly one.
func only(t *testing.T, objs []object, kind string, v any) object {
	t.Helper()
	var found []object
	for _, o := range objs {
		if o.Kind == kind {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one %s in deploy/kubernetes/, found %d", kind, len(found))
	}
	decodeNode(t, found[0].String(), found[0].node, v)
	return found[0]
}

// Typed views of the parts of each kind the tests check.

type labelSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"` // int or port name
	} `yaml:"httpGet"`
}

type securityContext struct {
	RunAsNonRoot             *bool  `yaml:"runAsNonRoot"`
	RunAsUser                *int64 `yaml:"runAsUser"`
	AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
	ReadOnlyRootFilesystem   *bool  `yaml:"readOnlyRootFilesystem"`
	Capabilities             struct {
		Drop []string `yaml:"drop"`
	} `yaml:"capabilities"`
	SeccompProfile struct {
		Type string `yaml:"type"`
	} `yaml:"seccompProfile"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Ports   []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	EnvFrom []struct {
		SecretRef    *struct{ Name string } `yaml:"secretRef"`
		ConfigMapRef *struct{ Name string } `yaml:"configMapRef"`
	} `yaml:"envFrom"`
	Env []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
	ReadinessProbe  *probe `yaml:"readinessProbe"`
	LivenessProbe   *probe `yaml:"livenessProbe"`
	StartupProbe    *probe `yaml:"startupProbe"`
	Resources       struct{ Requests, Limits map[string]string }
	SecurityContext securityContext `yaml:"securityContext"`
}

type deployment struct {
	Spec struct {
		Replicas *int          `yaml:"replicas"`
		Selector labelSelector `yaml:"selector"`
		Strategy struct {
			Type          string `yaml:"type"`
			RollingUpdate struct {
				MaxUnavailable string `yaml:"maxUnavailable"`
				MaxSurge       string `yaml:"maxSurge"`
			} `yaml:"rollingUpdate"`
		} `yaml:"strategy"`
		Template struct {
			Metadata objectMeta `yaml:"metadata"`
			Spec     struct {
				AutomountServiceAccountToken *bool           `yaml:"automountServiceAccountToken"`
				EnableServiceLinks           *bool           `yaml:"enableServiceLinks"`
				SecurityContext              securityContext `yaml:"securityContext"`
				TopologySpreadConstraints    []struct {
					TopologyKey       string        `yaml:"topologyKey"`
					WhenUnsatisfiable string        `yaml:"whenUnsatisfiable"`
					LabelSelector     labelSelector `yaml:"labelSelector"`
				} `yaml:"topologySpreadConstraints"`
				Affinity struct {
					PodAntiAffinity *yaml.Node `yaml:"podAntiAffinity"`
				} `yaml:"affinity"`
				Containers []container `yaml:"containers"`
				Volumes    []struct {
					Name      string                 `yaml:"name"`
					ConfigMap *struct{ Name string } `yaml:"configMap"`
					Secret    *struct {
						SecretName string `yaml:"secretName"`
					} `yaml:"secret"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type service struct {
	Spec struct {
		Type     string            `yaml:"type"`
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type pdb struct {
	Spec struct {
		MinAvailable   string        `yaml:"minAvailable"`
		MaxUnavailable string        `yaml:"maxUnavailable"`
		Selector       labelSelector `yaml:"selector"`
	} `yaml:"spec"`
}

type secret struct {
	StringData map[string]string `yaml:"stringData"`
	Data       map[string]string `yaml:"data"`
}

type configMap struct {
	Data map[string]string `yaml:"data"`
}

// ---------------------------------------------------------------------------
// Helpers

// subset reports whether every key/value of sel is in labels (how a
// selector picks pods); an empty selector selects nothing here on purpose.
func subset(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// parseEnvFile reads KEY=VALUE lines (compose env_file syntax, no
// interpolation): comments and blank lines skipped, optional quotes removed.
func parseEnvFile(t *testing.T, name string) map[string]string {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s:%d: not KEY=VALUE: %q", name, ln, line)
		}
		k = strings.TrimSpace(k)
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		if _, dup := env[k]; dup {
			t.Errorf("%s:%d: %s set twice", name, ln, k)
		}
		env[k] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return env
}

func lookup(maps ...map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		for _, m := range maps {
			if v, ok := m[k]; ok {
				return v, true
			}
		}
		return "", false
	}
}

func portOf(t *testing.T, hostport string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatalf("%q: %v", hostport, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("%q: %v", hostport, err)
	}
	return n
}

func listensOnAllInterfaces(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	return err == nil && (host == "" || host == "0.0.0.0" || host == "::")
}

// clientIDs returns the clients[].id of an usher YAML config.
func clientIDs(t *testing.T, where string, data []byte) []string {
	t.Helper()
	var c struct {
		Clients []struct {
			ID string `yaml:"id"`
		} `yaml:"clients"`
	}
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	var ids []string
	for _, cl := range c.Clients {
		ids = append(ids, cl.ID)
	}
	return ids
}

// ---------------------------------------------------------------------------
// Kubernetes

type k8sSet struct {
	objs       []object
	dep        deployment
	depObj     object
	ctr        container
	podLabels  map[string]string
	ports      map[string]int // port name → number ("" key unused)
	configPath string         // --config argument of the container
}

func loadK8s(t *testing.T) k8sSet {
	t.Helper()
	s := k8sSet{objs: k8sObjects(t), ports: map[string]int{}}
	s.depObj = only(t, s.objs, "Deployment", &s.dep)
	s.podLabels = s.dep.Spec.Template.Metadata.Labels
	cs := s.dep.Spec.Template.Spec.Containers
	idx := slices.IndexFunc(cs, func(c container) bool { return c.Name == "usher" })
	if idx < 0 {
		t.Fatalf("%s: no container named usher", s.depObj)
	}
	s.ctr = cs[idx]
	for _, p := range s.ctr.Ports {
		s.ports[p.Name] = p.ContainerPort
	}
	s.configPath = configFlag(append(slices.Clone(s.ctr.Command), s.ctr.Args...))
	return s
}

// configFlag returns the value of --config in a command line ("" if absent).
func configFlag(argv []string) string {
	for i, a := range argv {
		if a == "--config" && i+1 < len(argv) {
			return argv[i+1]
		}
		if v, ok := strings.CutPrefix(a, "--config="); ok {
			return v
		}
	}
	return ""
}

// resolvePort maps a probe/Service port (number or container port name) to
// the container port number; 0 when it names none of the container's ports.
func (s k8sSet) resolvePort(p string) int {
	if n, err := strconv.Atoi(p); err == nil {
		for _, v := range s.ports {
			if v == n {
				return n
			}
		}
		return 0
	}
	return s.ports[p]
}

func TestEveryYAMLFileParses(t *testing.T) {
	t.Parallel()
	for _, f := range yamlFiles(t) {
		t.Run(f, func(t *testing.T) {
			t.Parallel()
			if len(readDocs(t, f)) == 0 {
				t.Errorf("%s has no YAML document", f)
			}
		})
	}
}

func TestKubernetesObjectsHaveIdentity(t *testing.T) {
	t.Parallel()
	objs := k8sObjects(t)
	var ns object
	only(t, objs, "Namespace", &struct{}{})
	for _, o := range objs {
		if o.Kind == "Namespace" {
			ns = o
		}
	}
	seen := map[string]string{}
	for _, o := range objs {
		if o.Kind == "Kustomization" { // kustomize's own file: no metadata
			continue
		}
		if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
			t.Errorf("%s: apiVersion, kind and metadata.name are required (got %q, %q, %q)",
				o.file, o.APIVersion, o.Kind, o.Metadata.Name)
			continue
		}
		key := o.Kind + "/" + o.Metadata.Name
		if prev, dup := seen[key]; dup {
			t.Errorf("%s: %s is also defined in %s", o.file, key, prev)
		}
		seen[key] = o.file
		if o.Kind != "Namespace" && o.Metadata.Namespace != ns.Metadata.Name {
			t.Errorf("%s: metadata.namespace %q, want %q (namespace.yaml)", o, o.Metadata.Namespace, ns.Metadata.Name)
		}
	}
}

func TestKustomizationListsEveryManifestButTheSecret(t *testing.T) {
	t.Parallel()
	var k struct {
		Kind      string   `yaml:"kind"`
		Namespace string   `yaml:"namespace"`
		Resources []string `yaml:"resources"`
	}
	docs := readDocs(t, kustomization)
	if len(docs) != 1 {
		t.Fatalf("%s: want one document", kustomization)
	}
	decodeNode(t, kustomization, docs[0], &k)
	if k.Kind != "Kustomization" {
		t.Errorf("%s: kind %q", kustomization, k.Kind)
	}
	listed := map[string]bool{}
	for _, r := range k.Resources {
		p := path.Join(k8sDir, r)
		listed[p] = true
		if _, err := os.Stat(filepath.FromSlash(p)); err != nil {
			t.Errorf("%s lists %s: %v", kustomization, r, err)
		}
	}
	if listed[secretFile] {
		t.Errorf("%s must not list secret.yaml: its placeholders would be deployed as real secrets", kustomization)
	}
	for _, f := range yamlFiles(t) {
		if strings.HasPrefix(f, k8sDir+"/") && f != secretFile && f != kustomization && !listed[f] {
			t.Errorf("%s is not listed in %s", f, kustomization)
		}
	}
}

func TestDeployment(t *testing.T) {
	t.Parallel()
	s := loadK8s(t)
	pod := s.dep.Spec.Template.Spec
	c := s.ctr

	var sec secret
	secObj := only(t, s.objs, "Secret", &sec)
	var cm configMap
	cmObj := only(t, s.objs, "ConfigMap", &cm)

	effective := func(ctr, pod *bool) bool {
		if ctr != nil {
			return *ctr
		}
		return pod != nil && *pod
	}

	checks := []struct {
		name  string
		check func() error
	}{
		{"replicas", func() error {
			if s.dep.Spec.Replicas == nil || *s.dep.Spec.Replicas != wantReplicas {
				return fmt.Errorf("spec.replicas must be %d", wantReplicas)
			}
			return nil
		}},
		{"selector matches pod labels", func() error {
			if !subset(s.dep.Spec.Selector.MatchLabels, s.podLabels) {
				return fmt.Errorf("spec.selector.matchLabels %v does not select the template labels %v",
					s.dep.Spec.Selector.MatchLabels, s.podLabels)
			}
			return nil
		}},
		{"rolling update never drops capacity", func() error {
			ru := s.dep.Spec.Strategy.RollingUpdate
			if s.dep.Spec.Strategy.Type != "RollingUpdate" || ru.MaxUnavailable != "0" || ru.MaxSurge == "" || ru.MaxSurge == "0" {
				return fmt.Errorf("want strategy RollingUpdate, maxUnavailable 0, maxSurge > 0; got %+v", s.dep.Spec.Strategy)
			}
			return nil
		}},
		{"readiness probe is GET /readyz on the container port", func() error {
			return checkProbe(s, "readinessProbe", c.ReadinessProbe, "/readyz")
		}},
		{"liveness probe is GET /healthz on the container port", func() error {
			return checkProbe(s, "livenessProbe", c.LivenessProbe, "/healthz")
		}},
		{"startup probe", func() error {
			if c.StartupProbe == nil || c.StartupProbe.HTTPGet == nil {
				return errors.New("startupProbe must be an httpGet probe")
			}
			if s.resolvePort(c.StartupProbe.HTTPGet.Port) == 0 {
				return fmt.Errorf("startupProbe port %q is not a container port", c.StartupProbe.HTTPGet.Port)
			}
			return nil
		}},
		{"runs as non-root", func() error {
			if !effective(c.SecurityContext.RunAsNonRoot, pod.SecurityContext.RunAsNonRoot) {
				return errors.New("runAsNonRoot must be true")
			}
			for _, u := range []*int64{pod.SecurityContext.RunAsUser, c.SecurityContext.RunAsUser} {
				if u != nil && *u == 0 {
					return errors.New("runAsUser must not be 0")
				}
			}
			return nil
		}},
		{"container is locked down", func() error {
			sc := c.SecurityContext
			var errs []error
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				errs = append(errs, errors.New("allowPrivilegeEscalation must be false"))
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				errs = append(errs, errors.New("readOnlyRootFilesystem must be true"))
			}
			if !slices.Contains(sc.Capabilities.Drop, "ALL") {
				errs = append(errs, errors.New("capabilities.drop must contain ALL"))
			}
			seccomp := sc.SeccompProfile.Type
			if seccomp == "" {
				seccomp = pod.SecurityContext.SeccompProfile.Type
			}
			if seccomp != "RuntimeDefault" && seccomp != "Localhost" {
				errs = append(errs, fmt.Errorf("seccompProfile.type %q, want RuntimeDefault", seccomp))
			}
			return errors.Join(errs...)
		}},
		{"no service-link variables in usher's USHER_* namespace", func() error {
			if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
				return errors.New("enableServiceLinks must be false: a Service named usher injects USHER_PORT, USHER_SERVICE_HOST, ... into the environment")
			}
			return nil
		}},
		{"envFrom names the Secret", func() error {
			var names []string
			for _, e := range c.EnvFrom {
				if e.SecretRef != nil {
					names = append(names, e.SecretRef.Name)
				}
			}
			if !slices.Contains(names, secObj.Metadata.Name) {
				return fmt.Errorf("envFrom secretRefs %v do not include %q (%s)", names, secObj.Metadata.Name, secObj.file)
			}
			return nil
		}},
		{"config volume is the ConfigMap, mounted where --config points", func() error {
			if s.configPath == "" {
				return errors.New("container args/command give no --config")
			}
			for _, v := range pod.Volumes {
				if v.ConfigMap == nil {
					continue
				}
				if v.ConfigMap.Name != cmObj.Metadata.Name {
					return fmt.Errorf("volume %q names ConfigMap %q; %s defines %q", v.Name, v.ConfigMap.Name, cmObj.file, cmObj.Metadata.Name)
				}
				for _, m := range c.VolumeMounts {
					if m.Name != v.Name {
						continue
					}
					want := path.Join(m.MountPath, configMapKey)
					if s.configPath != want {
						return fmt.Errorf("--config %q, but the ConfigMap's %s is mounted at %q", s.configPath, configMapKey, want)
					}
					if !m.ReadOnly {
						return fmt.Errorf("volumeMount %q should be readOnly", m.Name)
					}
					if _, ok := cm.Data[configMapKey]; !ok {
						return fmt.Errorf("ConfigMap %q has no key %q", cmObj.Metadata.Name, configMapKey)
					}
					return nil
				}
				return fmt.Errorf("ConfigMap volume %q is not mounted", v.Name)
			}
			return errors.New("no configMap volume")
		}},
		{"resources", func() error {
			r := c.Resources
			if r.Requests["cpu"] == "" || r.Requests["memory"] == "" || r.Limits["memory"] == "" {
				return fmt.Errorf("want requests cpu+memory and a memory limit, got %+v", r)
			}
			return nil
		}},
		{"replicas spread across nodes", func() error {
			for _, tsc := range pod.TopologySpreadConstraints {
				if tsc.TopologyKey == "kubernetes.io/hostname" && subset(tsc.LabelSelector.MatchLabels, s.podLabels) {
					return nil
				}
			}
			if pod.Affinity.PodAntiAffinity != nil {
				return nil
			}
			return errors.New("want a kubernetes.io/hostname topologySpreadConstraint selecting the pods, or podAntiAffinity")
		}},
	}
	for _, tc := range checks {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if err := tc.check(); err != nil {
				t.Errorf("%s: %v", s.depObj, err)
			}
		})
	}
}

func checkProbe(s k8sSet, name string, p *probe, wantPath string) error {
	if p == nil || p.HTTPGet == nil {
		return fmt.Errorf("%s must be an httpGet probe", name)
	}
	if p.HTTPGet.Path != wantPath {
		return fmt.Errorf("%s path %q, want %q", name, p.HTTPGet.Path, wantPath)
	}
	if s.resolvePort(p.HTTPGet.Port) == 0 {
		return fmt.Errorf("%s port %q is not one of the container's ports %v", name, p.HTTPGet.Port, s.ports)
	}
	return nil
}

func TestServiceSelectsThePods(t *testing.T) {
	t.Parallel()
	s := loadK8s(t)
	var svc service
	o := only(t, s.objs, "Service", &svc)
	if !subset(svc.Spec.Selector, s.podLabels) {
		t.Errorf("%s: selector %v does not match the pod labels %v", o, svc.Spec.Selector, s.podLabels)
	}
	if len(svc.Spec.Ports) == 0 {
		t.Fatalf("%s: no ports", o)
	}
	for _, p := range svc.Spec.Ports {
		if s.resolvePort(p.TargetPort) == 0 {
			t.Errorf("%s: port %d targets %q, not a container port (%v)", o, p.Port, p.TargetPort, s.ports)
		}
	}
}

func TestPodDisruptionBudget(t *testing.T) {
	t.Parallel()
	s := loadK8s(t)
	var b pdb
	o := only(t, s.objs, "PodDisruptionBudget", &b)
	if !subset(b.Spec.Selector.MatchLabels, s.podLabels) {
		t.Errorf("%s: selector %v does not match the pod labels %v", o, b.Spec.Selector.MatchLabels, s.podLabels)
	}
	n, err := strconv.Atoi(b.Spec.MinAvailable)
	if err != nil {
		t.Fatalf("%s: minAvailable %q must be an integer", o, b.Spec.MinAvailable)
	}
	if n < 1 || n >= *s.dep.Spec.Replicas {
		t.Errorf("%s: minAvailable %d must be >= 1 and < replicas (%d), or no node could ever be drained", o, n, *s.dep.Spec.Replicas)
	}
}

func TestNetworkPoliciesSelectThePods(t *testing.T) {
	t.Parallel()
	s := loadK8s(t)
	for _, o := range s.objs {
		if o.Kind != "NetworkPolicy" {
			continue
		}
		var np struct {
			Spec struct {
				PodSelector labelSelector `yaml:"podSelector"`
				Ingress     []struct {
					Ports []struct {
						Port string `yaml:"port"`
					} `yaml:"ports"`
				} `yaml:"ingress"`
			} `yaml:"spec"`
		}
		decodeNode(t, o.String(), o.node, &np)
		if !subset(np.Spec.PodSelector.MatchLabels, s.podLabels) {
			t.Errorf("%s: podSelector %v does not match the pod labels %v", o, np.Spec.PodSelector.MatchLabels, s.podLabels)
		}
		for _, in := range np.Spec.Ingress {
			for _, p := range in.Ports {
				if s.resolvePort(p.Port) == 0 {
					t.Errorf("%s: ingress port %q is not a container port (%v)", o, p.Port, s.ports)
				}
			}
		}
	}
}

// TestConfigMapConfigValidates loads the ConfigMap's usher.yaml exactly as a
// pod would: with the Secret's values and the container's env as overrides.
func TestConfigMapConfigValidates(t *testing.T) {
	t.Parallel()
	s := loadK8s(t)
	var cm configMap
	cmObj := only(t, s.objs, "ConfigMap", &cm)
	var sec secret
	only(t, s.objs, "Secret", &sec)
	env := map[string]string{}
	for _, e := range s.ctr.Env {
		env[e.Name] = e.Value
	}
	cfg, err := config.Parse([]byte(cm.Data[configMapKey]), lookup(env, sec.StringData))
	if err != nil {
		t.Fatalf("%s: %s does not validate:\n%v", cmObj, configMapKey, err)
	}
	if cfg.Store.Driver != config.StoreRedis {
		t.Errorf("%s: store.driver %q: %d replicas need the shared redis store", cmObj, cfg.Store.Driver, wantReplicas)
	}
	if !listensOnAllInterfaces(cfg.Listen) {
		t.Errorf("%s: listen %q is unreachable from outside the pod", cmObj, cfg.Listen)
	}
	if p := portOf(t, cfg.Listen); s.resolvePort(strconv.Itoa(p)) == 0 {
		t.Errorf("%s: listen port %d is not a container port (%v)", cmObj, p, s.ports)
	}
	if k, err := cfg.Store.KeyEncryptionKeyBytes(); err != nil || k == nil {
		t.Errorf("%s: the key encryption key should be set (from the Secret): %v", cmObj, err)
	}
	// Behind the ingress every request comes from the controller: without a
	// trusted proxy all clients share one rate-limit bucket.
	if len(cfg.Server.TrustedProxies) == 0 || cfg.Server.ClientIPHeader == "" {
		t.Errorf("%s: server.trusted_proxies / client_ip_header unset: %+v", cmObj, cfg.Server)
	}
	if p := portOf(t, cfg.Metrics.Listen); p == portOf(t, cfg.Listen) || s.resolvePort(strconv.Itoa(p)) == 0 {
		t.Errorf("%s: metrics port %d must be its own container port (%v)", cmObj, p, s.ports)
	}
}

// TestSecretsAgree keeps the Kubernetes Secret and the compose env file on
// the same list of variables, and both free of real-looking values.
func TestSecretsAgree(t *testing.T) {
	t.Parallel()
	var sec secret
	only(t, k8sObjects(t), "Secret", &sec)
	if len(sec.Data) > 0 {
		t.Errorf("%s: use stringData placeholders, not base64 data", secretFile)
	}
	envFile := parseEnvFile(t, envExample)
	for _, src := range []struct {
		name string
		vars map[string]string
	}{{secretFile, sec.StringData}, {envExample, envFile}} {
		for k, v := range src.vars {
			if !strings.Contains(v, placeholderMark) {
				t.Errorf("%s: %s must be a %s placeholder, never a real value", src.name, k, placeholderMark)
			}
		}
	}
	a, b := sortedKeys(sec.StringData), sortedKeys(envFile)
	if !slices.Equal(a, b) {
		t.Errorf("%s has %v, %s has %v: keep them on the same secrets", secretFile, a, envExample, b)
	}
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// ---------------------------------------------------------------------------
// Environment variables

var usherVarRe = regexp.MustCompile(`\bUSHER_[A-Z0-9_]*[A-Z0-9]\b`)

// TestEnvVarsAreRealOverrides: a USHER_* name anywhere in deploy/ that usher
// does not read would be a setting silently ignored.
func TestEnvVarsAreRealOverrides(t *testing.T) {
	t.Parallel()
	known := map[string]bool{"USHER_CONFIG": true} // serve/config check --config default
	for _, n := range config.EnvNames() {
		known[n] = true
	}
	// Client secrets: USHER_CLIENT_<ID>_SECRET for the clients the configs
	// here define.
	var ids []string
	for _, f := range []string{exampleConfig, composeConfig} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, clientIDs(t, f, b)...)
	}
	var cm configMap
	only(t, k8sObjects(t), "ConfigMap", &cm)
	ids = append(ids, clientIDs(t, "ConfigMap", []byte(cm.Data[configMapKey]))...)
	for _, id := range ids {
		known[config.ClientSecretEnv(id)] = true
		known[config.WebhookSecretsEnv(id)] = true // webhook IDs are collected with client IDs below
	}
	known[config.WebhookSecretsEnv("crm")] = true // the example's webhook

	found := 0
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, ".go") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			for _, name := range usherVarRe.FindAllString(line, -1) {
				found++
				if !known[name] {
					t.Errorf("%s:%d: %s is not a USHER_* override usher reads (config.EnvNames, USHER_CLIENT_<ID>_SECRET of a configured client, USHER_CONFIG)", filepath.ToSlash(p), i+1, name)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found == 0 {
		t.Fatal("no USHER_* variable found under deploy/: is the scan broken?")
	}
}

// ---------------------------------------------------------------------------
// Usher config files

func TestExampleConfigValidates(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	env := parseEnvFile(t, envExample)
	// The example documents a webhook receiver the compose setup does not use.
	env[config.WebhookSecretsEnv("crm")] = "whsec_REPLACE_ME"
	if _, err := config.Parse(b, lookup(env)); err != nil {
		t.Errorf("%s with the secrets of %s does not validate:\n%v", exampleConfig, envExample, err)
	}
}

// ---------------------------------------------------------------------------
// Compose

type composeService struct {
	Build       any      `yaml:"build"`
	Image       string   `yaml:"image"`
	Command     any      `yaml:"command"`
	EnvFile     any      `yaml:"env_file"`
	Environment any      `yaml:"environment"`
	Volumes     []any    `yaml:"volumes"`
	Ports       []string `yaml:"ports"`
	Healthcheck *struct {
		Test any `yaml:"test"`
	} `yaml:"healthcheck"`
}

type composeProject struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

func loadCompose(t *testing.T) composeProject {
	t.Helper()
	docs := readDocs(t, composeFile)
	if len(docs) != 1 {
		t.Fatalf("%s: want one document, got %d", composeFile, len(docs))
	}
	var p composeProject
	decodeNode(t, composeFile, docs[0], &p) // resolves the x-usher merge keys
	return p
}

// strList flattens a compose string-or-list value.
func strList(v any) []string {
	switch x := v.(type) {
	case nil:
		return nil
	case string:
		return []string{x}
	case []any:
		var out []string
		for _, e := range x {
			switch e := e.(type) {
			case string:
				out = append(out, e)
			case map[string]any: // env_file long syntax {path: ...}
				if p, ok := e["path"].(string); ok {
					out = append(out, p)
				}
			default:
				out = append(out, fmt.Sprint(e))
			}
		}
		return out
	}
	return []string{fmt.Sprint(v)}
}

// environment normalizes compose's map or KEY=VALUE list form.
func environment(v any) map[string]string {
	out := map[string]string{}
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			out[k] = fmt.Sprint(val)
		}
	case []any:
		for _, e := range x {
			k, val, _ := strings.Cut(fmt.Sprint(e), "=")
			out[k] = val
		}
	}
	return out
}

// bindMounts returns target → source of the service's bind mounts, with ro.
func bindMounts(vols []any) map[string]struct {
	source string
	ro     bool
} {
	out := map[string]struct {
		source string
		ro     bool
	}{}
	for _, v := range vols {
		switch x := v.(type) {
		case string:
			parts := strings.Split(x, ":")
			if len(parts) < 2 {
				continue
			}
			out[parts[1]] = struct {
				source string
				ro     bool
			}{parts[0], len(parts) > 2 && slices.Contains(strings.Split(parts[2], ","), "ro")}
		case map[string]any:
			src, _ := x["source"].(string)
			tgt, _ := x["target"].(string)
			ro, _ := x["read_only"].(bool)
			out[tgt] = struct {
				source string
				ro     bool
			}{src, ro}
		}
	}
	return out
}

func TestCompose(t *testing.T) {
	t.Parallel()
	p := loadCompose(t)
	for _, name := range []string{"usher1", "usher2", "redis"} {
		if _, ok := p.Services[name]; !ok {
			t.Errorf("%s: service %q is missing", composeFile, name)
		}
	}

	t.Run("redis persists with AOF", func(t *testing.T) {
		t.Parallel()
		r := p.Services["redis"]
		cmd := strings.Join(strList(r.Command), " ")
		if !regexp.MustCompile(`--appendonly\s+yes\b`).MatchString(cmd) {
			t.Errorf("redis command %q must contain --appendonly yes", cmd)
		}
		hasData := false
		for _, v := range r.Volumes {
			if s, ok := v.(string); ok {
				src, tgt, _ := strings.Cut(s, ":")
				if strings.HasPrefix(tgt, "/data") {
					hasData = true
					if _, named := p.Volumes[src]; !named {
						t.Errorf("redis /data volume %q is not a named volume in the top-level volumes", src)
					}
				}
			}
		}
		if !hasData {
			t.Error("redis /data must be on a volume, or the append-only file dies with the container")
		}
	})

	for _, name := range []string{"usher1", "usher2"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			svc := p.Services[name]
			env := environment(svc.Environment)

			if svc.Image == "" && svc.Build == nil {
				t.Error("needs image or build")
			}
			if b, ok := svc.Build.(map[string]any); ok {
				ctx, _ := b["context"].(string)
				df, _ := b["dockerfile"].(string)
				if _, err := os.Stat(filepath.Join(ctx, df)); err != nil {
					t.Errorf("build: context %q + dockerfile %q: %v", ctx, df, err)
				}
			}

			// Secrets from usher.env, whose committed template is usher.env.example.
			envFiles := strList(svc.EnvFile)
			var fileEnv map[string]string
			for _, ef := range envFiles {
				if _, err := os.Stat(ef + ".example"); err != nil {
					t.Errorf("env_file %s has no committed %s.example", ef, ef)
				}
				if ef+".example" == envExample {
					fileEnv = parseEnvFile(t, envExample)
				}
			}
			if fileEnv == nil {
				t.Fatalf("env_file %v must include usher.env", envFiles)
			}
			for _, k := range []string{"USHER_SESSIONS_SECRET", "USHER_STORE_KEY_ENCRYPTION_KEY"} {
				if _, ok := fileEnv[k]; !ok {
					t.Errorf("%s must set %s (shared by both replicas)", envExample, k)
				}
				if _, ok := env[k]; ok {
					t.Errorf("%s must come from the env file, not inline environment", k)
				}
			}

			// The config file, mounted read-only where the image looks.
			mounts := bindMounts(svc.Volumes)
			cfgPath := env["USHER_CONFIG"]
			if cfgPath == "" {
				cfgPath = dockerConfigPath(t)
			}
			m, ok := mounts[cfgPath]
			if !ok {
				t.Fatalf("nothing mounted at the config path %s (mounts %v)", cfgPath, mounts)
			}
			if !m.ro {
				t.Errorf("config mount %s should be :ro", cfgPath)
			}
			if path.Clean(m.source) != composeConfig {
				t.Errorf("config mount source %q, want ./%s", m.source, composeConfig)
			}
			data, err := os.ReadFile(m.source)
			if err != nil {
				t.Fatal(err)
			}

			// What the container's usher would load.
			cfg, err := config.Parse(data, lookup(env, fileEnv))
			if err != nil {
				t.Fatalf("%s with %s's environment and %s does not validate:\n%v", m.source, name, envExample, err)
			}
			if cfg.Store.Driver != config.StoreRedis {
				t.Errorf("store.driver %q, want redis", cfg.Store.Driver)
			}
			if u, err := url.Parse(cfg.Store.Redis.URL); err != nil || u.Hostname() != "redis" {
				t.Errorf("store.redis.url %q must point at the redis service", cfg.Store.Redis.URL)
			}
			if !listensOnAllInterfaces(cfg.Listen) {
				t.Errorf("listen %q is unreachable from outside the container", cfg.Listen)
			}
			listenPort := portOf(t, cfg.Listen)
			metricsPort := portOf(t, cfg.Metrics.Listen)
			for _, pm := range svc.Ports {
				parts := strings.Split(pm, ":")
				cp, _ := strconv.Atoi(parts[len(parts)-1])
				switch {
				case cp == metricsPort && parts[0] != "127.0.0.1":
					t.Errorf("metrics port %q must be published on loopback only", pm)
				case cp != listenPort && cp != metricsPort:
					t.Errorf("published port %q does not reach listen port %d", pm, listenPort)
				}
			}
			// Behind the host's reverse proxy every request comes from the
			// network gateway: without a trusted proxy all clients share one
			// rate-limit bucket.
			if len(cfg.Server.TrustedProxies) == 0 || cfg.Server.ClientIPHeader == "" {
				t.Errorf("server.trusted_proxies / client_ip_header unset: %+v", cfg.Server)
			}

			// Healthcheck: the binary itself (distroless has no shell/curl).
			if svc.Healthcheck == nil {
				t.Fatal("no healthcheck")
			}
			hc := strList(svc.Healthcheck.Test)
			if len(hc) != 4 || hc[0] != "CMD" || hc[1] != "/usher" || hc[2] != "healthcheck" {
				t.Fatalf("healthcheck %q: want [CMD /usher healthcheck URL]", hc)
			}
			hu, err := url.Parse(hc[len(hc)-1])
			if err != nil || hu.Path != "/readyz" || hu.Port() != strconv.Itoa(listenPort) {
				t.Errorf("healthcheck URL %q: want /readyz on port %d", hc[len(hc)-1], listenPort)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Dockerfile

type instruction struct {
	line int
	cmd  string // upper-cased
	args string
}

func dockerInstructions(t *testing.T) []instruction {
	t.Helper()
	b, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, raw := range strings.Split(string(b), "\n") {
		line := strings.TrimSpace(raw)
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cur.Len() > 0 && strings.HasPrefix(line, "#") {
			continue // comment inside a continuation
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if s, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{start, strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

// stages splits the instructions at each FROM.
func stages(ins []instruction) [][]instruction {
	var out [][]instruction
	for _, in := range ins {
		if in.cmd == "FROM" {
			out = append(out, nil)
		}
		if len(out) > 0 {
			out[len(out)-1] = append(out[len(out)-1], in)
		}
	}
	return out
}

// fromImage is the image of a FROM line, flags (--platform) skipped.
func fromImage(args string) string {
	for _, f := range strings.Fields(args) {
		if !strings.HasPrefix(f, "--") {
			return f
		}
	}
	return ""
}

// dockerConfigPath is the --config argument of the image's CMD.
func dockerConfigPath(t *testing.T) string {
	t.Helper()
	var cmd []string
	for _, in := range dockerInstructions(t) {
		if in.cmd == "CMD" {
			cmd = nil
			if err := json.Unmarshal([]byte(in.args), &cmd); err != nil {
				t.Fatalf("%s:%d: CMD must be JSON (exec form): %v", dockerfile, in.line, err)
			}
		}
	}
	return configFlag(cmd)
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	st := stages(dockerInstructions(t))
	if len(st) < 2 {
		t.Fatalf("%s: want a multi-stage build, found %d FROM", dockerfile, len(st))
	}
	if img := fromImage(st[0][0].args); !strings.HasPrefix(img, "golang:") {
		t.Errorf("%s: builder stage %q should be a golang image", dockerfile, img)
	}
	final := st[len(st)-1]
	img := fromImage(final[0].args)
	if img != "scratch" && !strings.Contains(img, "distroless/static") {
		t.Errorf("%s:%d: final stage %q must be distroless/static or scratch", dockerfile, final[0].line, img)
	}

	last := map[string]instruction{}
	for _, in := range final {
		last[in.cmd] = in
	}
	user, ok := last["USER"]
	if !ok {
		t.Errorf("%s: the final stage must set a non-root USER", dockerfile)
	} else {
		u, _, _ := strings.Cut(user.args, ":")
		if u == "root" || u == "0" || u == "" {
			t.Errorf("%s:%d: USER %q is root", dockerfile, user.line, user.args)
		}
	}
	if !strings.Contains(last["COPY"].args, "--from=") && !slices.ContainsFunc(final, func(in instruction) bool {
		return in.cmd == "COPY" && strings.Contains(in.args, "--from=")
	}) {
		t.Errorf("%s: the final stage must COPY --from the builder", dockerfile)
	}
	var entry []string
	if err := json.Unmarshal([]byte(last["ENTRYPOINT"].args), &entry); err != nil || !slices.Equal(entry, []string{"/usher"}) {
		t.Errorf("%s: want ENTRYPOINT [\"/usher\"], got %q", dockerfile, last["ENTRYPOINT"].args)
	}
	if p := dockerConfigPath(t); p == "" {
		t.Errorf("%s: CMD should be serve --config <path>", dockerfile)
	}
	if !slices.Contains(strings.Fields(last["EXPOSE"].args), "8080") {
		t.Errorf("%s: want EXPOSE 8080", dockerfile)
	}
	var builds []instruction
	for _, in := range st[0] {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			builds = append(builds, in)
		}
	}
	if len(builds) == 0 || !strings.Contains(builds[0].args, "CGO_ENABLED=0") {
		t.Errorf("%s: the builder must run CGO_ENABLED=0 go build (a static binary for distroless/static)", dockerfile)
	}
}

// TestConfigPathAgrees: the image's default --config, the Kubernetes mount
// and the compose mount must be the same file.
func TestConfigPathAgrees(t *testing.T) {
	t.Parallel()
	img := dockerConfigPath(t)
	s := loadK8s(t)
	if s.configPath != img {
		t.Errorf("Dockerfile CMD --config %q, Deployment --config %q", img, s.configPath)
	}
	p := loadCompose(t)
	for _, name := range []string{"usher1", "usher2"} {
		svc := p.Services[name]
		if _, ok := bindMounts(svc.Volumes)[img]; !ok {
			t.Errorf("%s: %s mounts nothing at the image's config path %s", composeFile, name, img)
		}
		if v, ok := environment(svc.Environment)["USHER_CONFIG"]; ok && v != img {
			t.Errorf("%s: %s USHER_CONFIG %q, image default %q", composeFile, name, v, img)
		}
	}
}
