// Package kubernetes_test checks the Kubernetes manifests: every document
// decodes strictly into the Kubernetes API types (an unknown or misspelt
// field fails), the kustomization builds and lists every manifest, and the
// pods agree with the mrbacd config in the ConfigMap (ports, probes, the
// Secrets behind every *_env name) and with the hardening the project
// promises. It is a module of its own so k8s.io stays out of mrbacd's
// go.mod; `make test` runs it.
package kubernetes_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/mrbacd/mrbacd/config"
)

const (
	configMapName = "mrbacd-config"
	configKey     = "mrbacd.yaml"
	daemonName    = "mrbacd-daemon"
	gatewayName   = "mrbacd-gateway"
	containerName = "mrbacd"
)

// strictDecoder decodes YAML or JSON into the registered API types and
// fails on unknown, duplicate or miscased fields, as the API server's
// strict field validation does.
func strictDecoder(t *testing.T) runtime.Decoder {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, autoscalingv2.AddToScheme, policyv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}

// documents splits a multi-document YAML stream, skipping empty documents.
func documents(t *testing.T, name string, data []byte) [][]byte {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var probe map[string]any
		if err := yaml.Unmarshal(doc, &probe); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(probe) > 0 {
			out = append(out, doc)
		}
	}
}

// objects is what the kustomization builds, by kind and name.
type objects struct {
	namespaces      map[string]*corev1.Namespace
	serviceAccounts map[string]*corev1.ServiceAccount
	configMaps      map[string]*corev1.ConfigMap
	deployments     map[string]*appsv1.Deployment
	services        map[string]*corev1.Service
	hpas            map[string]*autoscalingv2.HorizontalPodAutoscaler
	pdbs            map[string]*policyv1.PodDisruptionBudget
}

func decodeAll(t *testing.T, dec runtime.Decoder, name string, data []byte) *objects {
	t.Helper()
	o := &objects{
		namespaces: map[string]*corev1.Namespace{}, serviceAccounts: map[string]*corev1.ServiceAccount{},
		configMaps: map[string]*corev1.ConfigMap{}, deployments: map[string]*appsv1.Deployment{},
		services: map[string]*corev1.Service{}, hpas: map[string]*autoscalingv2.HorizontalPodAutoscaler{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{},
	}
	for i, doc := range documents(t, name, data) {
		obj, gvk, err := dec.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%s: document %d: %v", name, i+1, err)
		}
		switch v := obj.(type) {
		case *corev1.Namespace:
			o.namespaces[v.Name] = v
		case *corev1.ServiceAccount:
			o.serviceAccounts[v.Name] = v
		case *corev1.ConfigMap:
			o.configMaps[v.Name] = v
		case *appsv1.Deployment:
			o.deployments[v.Name] = v
		case *corev1.Service:
			o.services[v.Name] = v
		case *autoscalingv2.HorizontalPodAutoscaler:
			o.hpas[v.Name] = v
		case *policyv1.PodDisruptionBudget:
			o.pdbs[v.Name] = v
		case *corev1.Secret:
			t.Errorf("%s: document %d: a Secret manifest; create Secrets with kubectl (README.md), never commit them", name, i+1)
		default:
			t.Errorf("%s: document %d: unexpected kind %s", name, i+1, gvk)
		}
	}
	return o
}

// build runs the kustomization as `kubectl apply -k` would.
func build(t *testing.T) []byte {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), ".")
	if err != nil {
		t.Fatalf("kustomize build: %v", err)
	}
	out, err := rm.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestManifestsDecodeStrictly decodes every manifest file on its own, so a
// failure names the file.
func TestManifestsDecodeStrictly(t *testing.T) {
	dec := strictDecoder(t)
	for _, f := range manifestFiles(t) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if docs := documents(t, f, data); len(docs) == 0 {
			t.Errorf("%s: no document", f)
		}
		decodeAll(t, dec, f, data)
	}
}

// TestStrictDecoderRefuses proves the check has teeth: a misspelt field, a
// miscased one, a duplicate and a field at the wrong level all fail.
func TestStrictDecoderRefuses(t *testing.T) {
	dec := strictDecoder(t)
	base := "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports: [{port: 80}]\n"
	tests := []struct {
		name string
		doc  string
	}{
		{name: "unknown field", doc: base + "  selectr: {app: x}\n"},
		{name: "miscased field", doc: base + "  Selector: {app: x}\n"},
		{name: "duplicate field", doc: base + "  type: ClusterIP\n  type: NodePort\n"},
		{name: "field at the wrong level", doc: base + "targetPort: 8080\n"},
	}
	if _, _, err := dec.Decode([]byte(base), nil, nil); err != nil {
		t.Fatalf("the valid base fails: %v", err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := dec.Decode([]byte(tc.doc), nil, nil); err == nil {
				t.Errorf("decoded without error:\n%s", tc.doc)
			}
		})
	}
}

// manifestFiles are the YAML files of this directory but the kustomization.
func manifestFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files = slices.DeleteFunc(files, func(f string) bool { return f == "kustomization.yaml" })
	sort.Strings(files)
	return files
}

// TestKustomizationListsEveryManifest: nothing written here is left out of
// `kubectl apply -k`, and nothing listed is missing.
func TestKustomizationListsEveryManifest(t *testing.T) {
	data, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Namespace string   `yaml:"namespace"`
		Resources []string `yaml:"resources"`
	}
	if err := yaml.Unmarshal(data, &k); err != nil {
		t.Fatal(err)
	}
	listed := slices.Sorted(slices.Values(k.Resources))
	if files := manifestFiles(t); !slices.Equal(listed, files) {
		t.Errorf("kustomization resources %v, files %v", listed, files)
	}
	o := decodeAll(t, strictDecoder(t), "kustomize build", build(t))
	if _, ok := o.namespaces[k.Namespace]; !ok {
		t.Errorf("namespace %q is not created by the manifests", k.Namespace)
	}
}

// parsedConfig is the mrbacd config of the ConfigMap, parsed by the
// project's own config package, and its *_env names by YAML path.
type parsedConfig struct {
	cfg  *config.Config
	envs map[string]string // YAML path -> variable name
}

func loadConfig(t *testing.T, cm *corev1.ConfigMap) parsedConfig {
	t.Helper()
	src, ok := cm.Data[configKey]
	if !ok {
		t.Fatalf("ConfigMap %s has no %s", cm.Name, configKey)
	}
	var root yaml.Node
	if err := yaml.Unmarshal([]byte(src), &root); err != nil {
		t.Fatal(err)
	}
	envs := map[string]string{}
	envNames(&root, "", envs)
	if envs["state.postgres.dsn_env"] == "" {
		t.Error("the config does not read the journal's DSN from state.postgres.dsn_env")
	}
	name := "configmap.yaml:" + configKey
	cfg, err := config.Parse(name, []byte(src))
	if err != nil {
		t.Fatalf("the ConfigMap's config does not parse:\n%v", err)
	}
	return parsedConfig{cfg: cfg, envs: envs}
}

// envNames collects every `*_env: NAME` of a YAML tree by dotted path.
func envNames(n *yaml.Node, path string, out map[string]string) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			envNames(c, path, out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			envNames(c, path+"["+strconv.Itoa(i)+"]", out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i].Value, n.Content[i+1]
			p := strings.TrimPrefix(path+"."+k, ".")
			if strings.HasSuffix(k, "_env") && v.Kind == yaml.ScalarNode && v.Value != "" {
				out[p] = v.Value
				continue
			}
			envNames(v, p, out)
		}
	}
}

// listenPort is the port of a host:port the kubelet and Service can reach.
func listenPort(t *testing.T, field, addr string) int32 {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s %q: %v", field, addr, err)
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		t.Errorf("%s %q listens on loopback: the kubelet's probes and the Service cannot reach it", field, addr)
	}
	p, err := strconv.ParseInt(port, 10, 32)
	if err != nil || p <= 0 {
		t.Fatalf("%s %q: want a fixed port", field, addr)
	}
	return int32(p)
}
