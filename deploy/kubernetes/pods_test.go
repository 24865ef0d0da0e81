package kubernetes_test

import (
	"path"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/mrbacd/mrbacd/metrics"
)

// built is the kustomize output and the config it carries.
type built struct {
	o   *objects
	cfg parsedConfig
}

func loadBuilt(t *testing.T) built {
	t.Helper()
	o := decodeAll(t, strictDecoder(t), "kustomize build", build(t))
	cm, ok := o.configMaps[configMapName]
	if !ok {
		t.Fatalf("no ConfigMap %s", configMapName)
	}
	return built{o: o, cfg: loadConfig(t, cm)}
}

// workload is one Deployment and what its command needs.
type workload struct {
	name    string
	command string   // mrbacd subcommand
	ports   []string // named container ports the config decides
	flags   []string // flags its args must hold
}

var workloads = []workload{
	// The daemon runs no gateway: gateway.listen is set in the shared config.
	{name: daemonName, command: "run", ports: []string{"metrics"}, flags: []string{"--no-gateway"}},
	{name: gatewayName, command: "gateway", ports: []string{"http", "metrics"}},
}

// daemonOnlyEnv says whether a *_env setting is read only by `mrbacd run`:
// the platform client's admin key and the notifier's credentials.
func daemonOnlyEnv(yamlPath string) bool {
	return strings.HasPrefix(yamlPath, "mistral.") || strings.HasPrefix(yamlPath, "notify.")
}

func container(t *testing.T, d *appsv1.Deployment) *corev1.Container {
	t.Helper()
	cs := d.Spec.Template.Spec.Containers
	if len(cs) != 1 || cs[0].Name != containerName {
		t.Fatalf("%s: want one container %q, got %d", d.Name, containerName, len(cs))
	}
	return &cs[0]
}

// portNumber resolves a probe's or Service's port (number or name).
func portNumber(t *testing.T, c *corev1.Container, p intstr.IntOrString) int32 {
	t.Helper()
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	t.Fatalf("container %s has no port named %q", c.Name, p.StrVal)
	return 0
}

func TestProbesAndPortsMatchConfig(t *testing.T) {
	b := loadBuilt(t)
	metricsPort := listenPort(t, "metrics.listen", b.cfg.cfg.Metrics.Listen)
	gatewayPort := listenPort(t, "gateway.listen", b.cfg.cfg.Gateway.Listen)
	want := map[string]int32{"metrics": metricsPort, "http": gatewayPort}
	for _, w := range workloads {
		t.Run(w.name, func(t *testing.T) {
			d, ok := b.o.deployments[w.name]
			if !ok {
				t.Fatalf("no Deployment %s", w.name)
			}
			c := container(t, d)
			if len(c.Args) < 3 || c.Args[0] != w.command || c.Args[1] != "--config" {
				t.Fatalf("args %q, want %s --config FILE", c.Args, w.command)
			}
			checkConfigMount(t, d, c, c.Args[2])
			for _, f := range w.flags {
				if !slices.Contains(c.Args[3:], f) {
					t.Errorf("args %q lack %s", c.Args, f)
				}
			}
			for _, name := range w.ports {
				if got := portNumber(t, c, intstr.FromString(name)); got != want[name] {
					t.Errorf("port %s = %d, the config says %d", name, got, want[name])
				}
			}
			probes := []struct {
				kind  string
				probe *corev1.Probe
				path  string
			}{
				{kind: "liveness", probe: c.LivenessProbe, path: "/healthz"},
				{kind: "readiness", probe: c.ReadinessProbe, path: "/readyz"},
				{kind: "startup", probe: c.StartupProbe, path: "/healthz"},
			}
			for _, p := range probes {
				if p.probe == nil || p.probe.HTTPGet == nil {
					t.Errorf("%s probe: want an httpGet", p.kind)
					continue
				}
				if p.probe.HTTPGet.Path != p.path {
					t.Errorf("%s probe path %q, want %q", p.kind, p.probe.HTTPGet.Path, p.path)
				}
				if got := portNumber(t, c, p.probe.HTTPGet.Port); got != metricsPort {
					t.Errorf("%s probe port %d, metrics.listen is on %d", p.kind, got, metricsPort)
				}
			}
			// The kubelet must wait longer than /readyz bounds its check, or
			// a slow journal reads as a timeout with no reason.
			if rp := c.ReadinessProbe; rp != nil && int64(rp.TimeoutSeconds)*1e9 <= int64(metrics.DefaultReadyTimeout) {
				t.Errorf("readiness timeoutSeconds %d must exceed /readyz's own bound %v", rp.TimeoutSeconds, metrics.DefaultReadyTimeout)
			}
			tg := d.Spec.Template.Spec.TerminationGracePeriodSeconds
			if tg == nil || int64(*tg)*1e9 <= int64(b.cfg.cfg.ShutdownTimeout.D()) {
				t.Errorf("terminationGracePeriodSeconds must exceed shutdown_timeout %v", b.cfg.cfg.ShutdownTimeout.D())
			}
		})
	}
}

// checkConfigMount: --config names the ConfigMap's file, mounted read-only.
func checkConfigMount(t *testing.T, d *appsv1.Deployment, c *corev1.Container, file string) {
	t.Helper()
	vol, ok := volumeAt(d, c, path.Dir(file))
	if !ok || vol.ConfigMap == nil || vol.ConfigMap.Name != configMapName || path.Base(file) != configKey {
		t.Errorf("--config %s is not the ConfigMap %s's %s", file, configMapName, configKey)
		return
	}
	for _, m := range c.VolumeMounts {
		if m.Name == vol.Name && !m.ReadOnly {
			t.Errorf("the config volume is mounted writable")
		}
	}
}

// volumeAt returns the volume mounted at dir in c.
func volumeAt(d *appsv1.Deployment, c *corev1.Container, dir string) (corev1.Volume, bool) {
	for _, m := range c.VolumeMounts {
		if m.MountPath != dir || m.SubPath != "" {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == m.Name {
				return v, true
			}
		}
	}
	return corev1.Volume{}, false
}

// TestSecretsFromSecretKeyRefs: every *_env name a component reads is in
// its container's env from a Secret (never an inline value), and the
// gateway gets no Secret it does not read.
func TestSecretsFromSecretKeyRefs(t *testing.T) {
	b := loadBuilt(t)
	if len(b.cfg.envs) == 0 {
		t.Fatal("the config names no *_env variable")
	}
	for _, w := range workloads {
		t.Run(w.name, func(t *testing.T) {
			c := container(t, b.o.deployments[w.name])
			env := map[string]corev1.EnvVar{}
			for _, e := range c.Env {
				if _, dup := env[e.Name]; dup {
					t.Errorf("env %s twice", e.Name)
				}
				env[e.Name] = e
			}
			needed := map[string]bool{}
			for p, name := range b.cfg.envs {
				if w.command != "run" && daemonOnlyEnv(p) {
					continue
				}
				needed[name] = true
				e, ok := env[name]
				switch {
				case !ok:
					t.Errorf("%s: %s reads %s, not in the container's env", p, w.command, name)
				case e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil:
					t.Errorf("env %s (%s) must come from a secretKeyRef, never inline", name, p)
				case e.ValueFrom.SecretKeyRef.Name == "" || e.ValueFrom.SecretKeyRef.Key == "":
					t.Errorf("env %s: secretKeyRef needs a name and a key", name)
				case e.ValueFrom.SecretKeyRef.Optional != nil && *e.ValueFrom.SecretKeyRef.Optional:
					t.Errorf("env %s: an optional Secret would start the pod without it", name)
				}
			}
			for name, e := range env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && !needed[name] {
					t.Errorf("env %s from Secret %s: %s does not read it (least privilege)", name, e.ValueFrom.SecretKeyRef.Name, w.command)
				}
			}
		})
	}
}

// TestPodHardening: non-root with a numeric uid, read-only root, no
// privilege escalation, no capabilities, RuntimeDefault seccomp, no
// service account token; writable places are emptyDirs.
func TestPodHardening(t *testing.T) {
	b := loadBuilt(t)
	for _, w := range workloads {
		t.Run(w.name, func(t *testing.T) {
			d := b.o.deployments[w.name]
			ps := d.Spec.Template.Spec
			c := container(t, d)
			if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
				t.Error("pod: automountServiceAccountToken must be false")
			}
			sa, ok := b.o.serviceAccounts[ps.ServiceAccountName]
			if !ok {
				t.Errorf("service account %q is not in the manifests", ps.ServiceAccountName)
			} else if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
				t.Errorf("service account %s: automountServiceAccountToken must be false", sa.Name)
			}
			if ps.HostNetwork || ps.HostPID || ps.HostIPC {
				t.Error("pod shares a host namespace")
			}
			pod, sc := ps.SecurityContext, c.SecurityContext
			if pod == nil || sc == nil {
				t.Fatal("pod and container security contexts are required")
			}
			if !isTrue(sc.RunAsNonRoot) && !isTrue(pod.RunAsNonRoot) {
				t.Error("runAsNonRoot must be true")
			}
			uid := sc.RunAsUser
			if uid == nil {
				uid = pod.RunAsUser
			}
			if uid == nil || *uid == 0 {
				t.Error("runAsUser must be a numeric non-root uid (the kubelet cannot check a user name)")
			}
			if !isTrue(sc.ReadOnlyRootFilesystem) {
				t.Error("readOnlyRootFilesystem must be true")
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Error("allowPrivilegeEscalation must be false")
			}
			if isTrue(sc.Privileged) {
				t.Error("privileged")
			}
			if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
				t.Error("capabilities: drop ALL, add none")
			}
			sp := sc.SeccompProfile
			if sp == nil {
				sp = pod.SeccompProfile
			}
			if sp == nil || sp.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Error("seccompProfile must be RuntimeDefault")
			}
			writable := []string{"/tmp"}
			if w.command == "run" {
				writable = append(writable, path.Dir(b.cfg.cfg.Admin.Socket))
			}
			for _, dir := range writable {
				if v, ok := volumeAt(d, c, dir); !ok || v.EmptyDir == nil {
					t.Errorf("%s must be an emptyDir (the root filesystem is read-only)", dir)
				}
			}
			checkVaultToken(t, b, d, c)
			checkResources(t, c)
		})
	}
}

func isTrue(b *bool) bool { return b != nil && *b }

// checkVaultToken: with Vault's kubernetes auth, jwt_file is a projected,
// audience-bound service account token (the automatic one is off).
func checkVaultToken(t *testing.T, b built, d *appsv1.Deployment, c *corev1.Container) {
	t.Helper()
	v := b.cfg.cfg.Secrets.Vault
	if v == nil || v.Auth.Method != "kubernetes" {
		return
	}
	vol, ok := volumeAt(d, c, path.Dir(v.Auth.JWTFile))
	if !ok || vol.Projected == nil {
		t.Errorf("secrets.vault.auth.jwt_file %s is not on a projected volume", v.Auth.JWTFile)
		return
	}
	for _, s := range vol.Projected.Sources {
		if st := s.ServiceAccountToken; st != nil && st.Path == path.Base(v.Auth.JWTFile) {
			if st.Audience == "" {
				t.Error("the Vault token needs an audience")
			}
			return
		}
	}
	t.Errorf("no serviceAccountToken projected at %s", v.Auth.JWTFile)
}

// checkResources: requests set (the autoscaler and the scheduler need
// them), a memory limit, requests within limits.
func checkResources(t *testing.T, c *corev1.Container) {
	t.Helper()
	r := c.Resources
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := r.Requests[name]; !ok || q.IsZero() {
			t.Errorf("no %s request", name)
		}
	}
	lim, ok := r.Limits[corev1.ResourceMemory]
	if !ok {
		t.Error("no memory limit")
		return
	}
	if req := r.Requests[corev1.ResourceMemory]; req.Cmp(lim) > 0 {
		t.Errorf("memory request %s above limit %s", req.String(), lim.String())
	}
}

// TestTopology: two daemons; the gateway behind its Service, scaled by
// the autoscaler on CPU, both kept by disruption budgets.
func TestTopology(t *testing.T) {
	b := loadBuilt(t)
	daemon, gw := b.o.deployments[daemonName], b.o.deployments[gatewayName]
	if daemon == nil || gw == nil {
		t.Fatal("the daemon and gateway Deployments are required")
	}
	if daemon.Spec.Replicas == nil || *daemon.Spec.Replicas != 2 {
		t.Error("the daemon runs as 2 replicas (one leads, one stands by)")
	}
	if gw.Spec.Replicas != nil {
		t.Error("the gateway's replicas belong to the autoscaler; leave spec.replicas out")
	}
	for _, d := range []*appsv1.Deployment{daemon, gw} {
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("%s: the selector does not match its pod template", d.Name)
		}
	}
	gwPods := labels.Set(gw.Spec.Template.Labels)

	svc, ok := b.o.services[gatewayName]
	if !ok {
		t.Fatalf("no Service %s", gatewayName)
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(gwPods) ||
		labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(daemon.Spec.Template.Labels)) {
		t.Error("the Service must select the gateway's pods and only them")
	}
	gwPort := listenPort(t, "gateway.listen", b.cfg.cfg.Gateway.Listen)
	c := container(t, gw)
	if len(svc.Spec.Ports) == 0 {
		t.Fatal("the Service has no port")
	}
	for _, p := range svc.Spec.Ports {
		if got := portNumber(t, c, p.TargetPort); got != gwPort {
			t.Errorf("Service targetPort %s = %d, gateway.listen is on %d", p.TargetPort.String(), got, gwPort)
		}
	}

	hpa, ok := b.o.hpas[gatewayName]
	if !ok {
		t.Fatalf("no HorizontalPodAutoscaler %s", gatewayName)
	}
	ref := hpa.Spec.ScaleTargetRef
	if ref.Kind != "Deployment" || ref.Name != gatewayName || ref.APIVersion != "apps/v1" {
		t.Errorf("the autoscaler targets %s %s %s", ref.APIVersion, ref.Kind, ref.Name)
	}
	if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2 || hpa.Spec.MaxReplicas < *hpa.Spec.MinReplicas {
		t.Error("the autoscaler keeps at least 2 gateways")
	}
	cpu := slices.ContainsFunc(hpa.Spec.Metrics, func(m autoscalingv2.MetricSpec) bool {
		return m.Resource != nil && m.Resource.Name == corev1.ResourceCPU && m.Resource.Target.AverageUtilization != nil
	})
	if !cpu {
		t.Error("the autoscaler scales on CPU utilization")
	}

	for _, d := range []*appsv1.Deployment{daemon, gw} {
		covered := false
		for _, pdb := range b.o.pdbs {
			sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
			if err == nil && sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				covered = true
				if pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil {
					t.Errorf("PodDisruptionBudget %s sets no bound", pdb.Name)
				}
			}
		}
		if !covered {
			t.Errorf("%s: no PodDisruptionBudget", d.Name)
		}
	}

	for name, ns := range b.o.namespaces {
		if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
			t.Errorf("namespace %s: enforce the restricted Pod Security Standard", name)
		}
	}
}
