package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/keel-registry/keel/internal/stack"
)

// uploadParallelism is the upload service's default number of parts in
// flight per upload (upload.Options.Parallelism, "0 means 4"); the stack
// does not change it. Each upload holds up to Parallelism+1 part buffers.
const uploadParallelism = 4

// kubeObject is one Kubernetes object, with the fields the tests read.
type kubeObject struct {
	file string

	APIVersion string `yaml:"apiVersion"`
	Kind       string
	Metadata   struct {
		Name      string
		Namespace string
	}
	// ConfigMap and Secret.
	Data       map[string]string
	StringData map[string]string `yaml:"stringData"`

	// Deployment, StatefulSet, Service and HorizontalPodAutoscaler; which
	// fields mean anything depends on Kind.
	Spec struct {
		// Deployment and StatefulSet.
		Template struct {
			Spec podSpec
		}
		// Service.
		ClusterIP string `yaml:"clusterIP"`
		Selector  yaml.Node
		Ports     []struct {
			Name       string
			Port       int
			TargetPort yaml.Node `yaml:"targetPort"`
		}
		// HorizontalPodAutoscaler.
		ScaleTargetRef struct {
			Kind string
			Name string
		} `yaml:"scaleTargetRef"`
	}
}

type podSpec struct {
	TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
	Containers                    []container
}

type container struct {
	Name  string
	Image string
	Env   []struct {
		Name      string
		Value     string
		ValueFrom struct {
			SecretKeyRef    *keyRef `yaml:"secretKeyRef"`
			ConfigMapKeyRef *keyRef `yaml:"configMapKeyRef"`
		} `yaml:"valueFrom"`
	}
	EnvFrom []struct {
		ConfigMapRef *struct{ Name string } `yaml:"configMapRef"`
		SecretRef    *struct{ Name string } `yaml:"secretRef"`
	} `yaml:"envFrom"`
	Ports []struct {
		Name          string
		ContainerPort int `yaml:"containerPort"`
	}
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string
		Limits   map[string]string
	}
}

type keyRef struct {
	Name     string
	Key      string
	Optional bool
}

type probe struct {
	GRPC *struct {
		Port int
	} `yaml:"grpc"`
	HTTPGet *struct {
		Path string
		Port yaml.Node
	} `yaml:"httpGet"`
	Exec *struct {
		Command []string
	}
}

// kubeFiles returns every YAML file under deploy/kubernetes.
func kubeFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(kubeDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(p, ".yaml") ||
			strings.HasSuffix(p, ".yml")) {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no YAML files under %s", kubeDir)
	}
	return files
}

// loadKube parses every Kubernetes manifest under deploy/kubernetes (the
// kustomization files aside).
func loadKube(t *testing.T) []kubeObject {
	t.Helper()
	var objs []kubeObject
	for _, file := range kubeFiles(t) {
		if filepath.Base(file) == "kustomization.yaml" {
			continue
		}
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		for {
			var o kubeObject
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("parse %s: %v", file, err)
			}
			if o.Kind == "" || o.Metadata.Name == "" {
				t.Errorf("%s holds a document without kind or name", file)
				continue
			}
			o.file = file
			objs = append(objs, o)
		}
	}
	return objs
}

// env returns the environment a container gets: its own variables, and
// those of the ConfigMaps and Secrets it takes whole. Values from a
// secretKeyRef are resolved too.
func (c container) env(t *testing.T, objs []kubeObject, file string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm := find(objs, "ConfigMap", from.ConfigMapRef.Name)
			if cm == nil {
				t.Errorf("%s: envFrom names ConfigMap %q, which no manifest defines",
					file, from.ConfigMapRef.Name)
				continue
			}
			for k, v := range cm.Data {
				out[k] = v
			}
		case from.SecretRef != nil:
			s := find(objs, "Secret", from.SecretRef.Name)
			if s == nil {
				t.Errorf("%s: envFrom names Secret %q, which no manifest defines",
					file, from.SecretRef.Name)
				continue
			}
			for k, v := range s.StringData {
				out[k] = v
			}
		}
	}
	for _, e := range c.Env {
		v := e.Value
		if ref := e.ValueFrom.SecretKeyRef; ref != nil {
			s := find(objs, "Secret", ref.Name)
			val, ok := "", false
			if s != nil {
				val, ok = s.StringData[ref.Key]
			}
			if !ok && !ref.Optional {
				t.Errorf("%s: %s comes from Secret %s key %s, which no manifest defines",
					file, e.Name, ref.Name, ref.Key)
			}
			v = val
		}
		if ref := e.ValueFrom.ConfigMapKeyRef; ref != nil {
			cm := find(objs, "ConfigMap", ref.Name)
			if cm == nil || cm.Data[ref.Key] == "" && !ref.Optional {
				t.Errorf("%s: %s comes from ConfigMap %s key %s, which no manifest "+
					"defines", file, e.Name, ref.Name, ref.Key)
			} else {
				v = cm.Data[ref.Key]
			}
		}
		out[e.Name] = v
	}
	return out
}

// find returns the object of kind and name, or nil.
func find(objs []kubeObject, kind, name string) *kubeObject {
	for i := range objs {
		if objs[i].Kind == kind && objs[i].Metadata.Name == name {
			return &objs[i]
		}
	}
	return nil
}

func TestKubernetesManifests(t *testing.T) {
	objs := loadKube(t)
	compose, _ := loadCompose(t)
	known := stackEnv(t)
	documented := readmeEnv(t)

	images := buildImages(t)
	for _, svc := range compose.Services {
		images[svc.Image] = true
	}
	composePorts := map[string]int{}
	for name, svc := range compose.Services {
		_, composePorts[svc.Environment["KEEL_TARGET"]] = listenPort(t, name,
			svc.Environment)
	}

	for _, o := range objs {
		if o.Metadata.Namespace == "" && o.Kind != "Namespace" {
			t.Errorf("%s: %s %s has no namespace", o.file, o.Kind, o.Metadata.Name)
		}
		for k := range o.Data {
			checkEnvName(t, o.file, k, known, documented)
		}
		for k := range o.StringData {
			checkEnvName(t, o.file, k, known, documented)
		}
	}

	servicePorts := map[string]int{} // Service name -> port
	workloads := 0
	for _, o := range objs {
		if o.Kind == "Service" {
			for _, p := range o.Spec.Ports {
				servicePorts[o.Metadata.Name] = p.Port
			}
		}
		if o.Kind != "Deployment" && o.Kind != "StatefulSet" {
			continue
		}
		workloads++
		spec := o.Spec.Template.Spec
		if len(spec.Containers) != 1 {
			t.Errorf("%s: %s has %d containers, want 1", o.file, o.Metadata.Name,
				len(spec.Containers))
			continue
		}
		c := spec.Containers[0]
		where := fmt.Sprintf("%s: %s %s", o.file, o.Kind, o.Metadata.Name)
		if !images[c.Image] {
			t.Errorf("%s runs image %q, want one the compose file or %s uses (%v)",
				where, c.Image, buildScript, keys(images))
		}

		for _, e := range c.Env {
			checkEnvName(t, where, e.Name, known, documented)
		}
		env := c.env(t, objs, where)
		target, port := listenPort(t, where, env)
		if target != o.Metadata.Name {
			t.Errorf("%s runs KEEL_TARGET=%s; want the workload named after its target",
				where, target)
		}
		if want := composePorts[target]; port != want {
			t.Errorf("%s listens on %d, compose's %s on %d; want them equal",
				where, port, target, want)
		}
		if len(c.Ports) != 1 || c.Ports[0].ContainerPort != port {
			t.Errorf("%s: container ports %+v, want one: %d", where, c.Ports, port)
		}
		for _, pr := range []struct {
			name string
			p    *probe
		}{{"readinessProbe", c.ReadinessProbe}, {"livenessProbe", c.LivenessProbe}} {
			checkProbe(t, where+" "+pr.name, pr.p, target, port)
		}
		if c.Resources.Limits["memory"] == "" || c.Resources.Requests["memory"] == "" ||
			c.Resources.Requests["cpu"] == "" {
			t.Errorf("%s: resources %+v, want cpu and memory requests and a memory "+
				"limit", where, c.Resources)
		}
		grace := strconv.Itoa(spec.TerminationGracePeriodSeconds) + "s"
		checkGrace(t, where+" terminationGracePeriodSeconds", grace, env["KEEL_STOP_TIMEOUT"])

		for v, want := range dialVars {
			if val, ok := env[v]; ok && val != "" {
				checkDial(t, where, v, val, want, composePorts)
			}
		}
		if target == "upload" {
			checkUploadMemory(t, where, c, env)
		}
	}
	if workloads < 4 {
		t.Errorf("found %d Deployments and StatefulSets, want gateway, auth, upload, "+
			"manifest (and s3)", workloads)
	}

	for _, o := range objs {
		if o.Kind != "Service" {
			continue
		}
		w := find(objs, "Deployment", o.Metadata.Name)
		if w == nil {
			w = find(objs, "StatefulSet", o.Metadata.Name)
		}
		if w == nil {
			t.Errorf("%s: Service %s has no workload of the same name", o.file,
				o.Metadata.Name)
			continue
		}
		c := w.Spec.Template.Spec.Containers[0]
		for _, p := range o.Spec.Ports {
			if p.Port != composePorts[o.Metadata.Name] {
				t.Errorf("%s: Service %s port %d, want %d as in the dial targets",
					o.file, o.Metadata.Name, p.Port, composePorts[o.Metadata.Name])
			}
			tp := p.TargetPort.Value
			if tp != c.Ports[0].Name && tp != strconv.Itoa(c.Ports[0].ContainerPort) {
				t.Errorf("%s: Service %s targetPort %q, want the container port %s/%d",
					o.file, o.Metadata.Name, tp, c.Ports[0].Name, c.Ports[0].ContainerPort)
			}
		}
		grpc := o.Metadata.Name == "auth" || o.Metadata.Name == "upload" ||
			o.Metadata.Name == "manifest"
		if grpc && o.Spec.ClusterIP != "None" {
			t.Errorf("%s: Service %s has clusterIP %q, want None (headless) so that "+
				"DNS returns every pod for round-robin", o.file, o.Metadata.Name,
				o.Spec.ClusterIP)
		}
	}

	hpa := find(objs, "HorizontalPodAutoscaler", "upload")
	if hpa == nil || hpa.Spec.ScaleTargetRef.Kind != "Deployment" ||
		hpa.Spec.ScaleTargetRef.Name != "upload" {
		t.Error("want a HorizontalPodAutoscaler scaling Deployment upload")
	}
	for _, want := range []string{"gateway", "auth", "upload", "manifest"} {
		if find(objs, "Deployment", want) == nil {
			t.Errorf("no Deployment %s", want)
		}
	}
}

// checkProbe checks that a probe exists and checks the listen port, with a
// native gRPC probe for the gRPC services.
func checkProbe(t *testing.T, where string, p *probe, target string, port int) {
	t.Helper()
	switch {
	case p == nil:
		t.Errorf("%s is missing", where)
	case p.GRPC != nil:
		if p.GRPC.Port != port {
			t.Errorf("%s: grpc port %d, want %d", where, p.GRPC.Port, port)
		}
	case p.HTTPGet != nil:
		if p.HTTPGet.Port.Value != strconv.Itoa(port) && p.HTTPGet.Port.Value != "http" {
			t.Errorf("%s: httpGet port %q, want %d", where, p.HTTPGet.Port.Value, port)
		}
	case p.Exec != nil:
		if got := probePort(t, where, p.Exec.Command); got != port {
			t.Errorf("%s: checks port %d, want %d", where, got, port)
		}
	default:
		t.Errorf("%s has no grpc, httpGet or exec check", where)
	}
	if p != nil && p.GRPC == nil && (target == "auth" || target == "upload" ||
		target == "manifest") {
		t.Errorf("%s: want a native grpc probe for the %s service", where, target)
	}
}

// checkUploadMemory checks that the upload pods' memory limit holds at
// least one upload's part buffers: PartSize x (Parallelism + 1).
func checkUploadMemory(t *testing.T, where string, c container, env map[string]string) {
	t.Helper()
	part := int64(stack.DefaultPartSize)
	if v := env["KEEL_PART_SIZE"]; v != "" {
		n, err := stack.ParseSize(v)
		if err != nil {
			t.Errorf("%s: KEEL_PART_SIZE: %v", where, err)
			return
		}
		part = n
	}
	limit, err := parseQuantity(c.Resources.Limits["memory"])
	if err != nil {
		t.Errorf("%s: memory limit: %v", where, err)
		return
	}
	if need := part * (uploadParallelism + 1); limit < 2*need {
		t.Errorf("%s: memory limit %d bytes, want at least two uploads' buffers, "+
			"2 x %d x (%d+1) = %d", where, limit, part, uploadParallelism, 2*need)
	}
}

// parseQuantity reads a Kubernetes memory quantity with a binary suffix.
func parseQuantity(q string) (int64, error) {
	for suffix, f := range map[string]int64{"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30} {
		if n, ok := strings.CutSuffix(q, suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			return v * f, err
		}
	}
	return 0, fmt.Errorf("quantity %q: want a number of Ki, Mi or Gi", q)
}

// TestKustomizationsListEveryManifest fails when a manifest is added to
// deploy/kubernetes without being listed, and so never applied.
func TestKustomizationsListEveryManifest(t *testing.T) {
	listed := map[string]bool{}
	for _, file := range kubeFiles(t) {
		if filepath.Base(file) != "kustomization.yaml" {
			continue
		}
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var k struct{ Resources []string }
		if err := yaml.Unmarshal(raw, &k); err != nil {
			t.Fatalf("parse %s: %v", file, err)
		}
		for _, r := range k.Resources {
			p := filepath.Join(filepath.Dir(file), r)
			if _, err := os.Stat(p); err != nil {
				t.Errorf("%s lists %s: %v", file, r, err)
			}
			listed[p] = true
		}
	}
	for _, file := range kubeFiles(t) {
		if filepath.Base(file) != "kustomization.yaml" && !listed[file] {
			t.Errorf("%s is in no kustomization.yaml's resources", file)
		}
	}
}

// TestKustomizeBuilds renders both kustomizations with kubectl, when it is
// installed (rendering needs no cluster), and checks that the s3 overlay
// points the services at the in-cluster server.
func TestKustomizeBuilds(t *testing.T) {
	bin, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl is not installed")
	}
	for _, tc := range []struct {
		dir          string
		endpoint     string
		statefulSets int
	}{
		{kubeDir, "https://ACCOUNT_ID.r2.cloudflarestorage.com", 0},
		{filepath.Join(kubeDir, "s3"), "http://s3:9000", 1},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, bin, "kustomize", tc.dir).Output()
		cancel()
		if err != nil {
			t.Errorf("kubectl kustomize %s: %v", tc.dir, err)
			continue
		}

		var endpoint string
		statefulSets := 0
		dec := yaml.NewDecoder(bytes.NewReader(out))
		for {
			var o kubeObject
			if err := dec.Decode(&o); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("parse kubectl kustomize %s: %v", tc.dir, err)
			}
			if o.Kind == "ConfigMap" && o.Metadata.Name == "keel-config" {
				endpoint = o.Data["KEEL_S3_ENDPOINT"]
			}
			if o.Kind == "StatefulSet" {
				statefulSets++
			}
		}
		if endpoint != tc.endpoint {
			t.Errorf("kubectl kustomize %s: KEEL_S3_ENDPOINT = %q, want %q",
				tc.dir, endpoint, tc.endpoint)
		}
		if statefulSets != tc.statefulSets {
			t.Errorf("kubectl kustomize %s: %d StatefulSets, want %d",
				tc.dir, statefulSets, tc.statefulSets)
		}
	}
}
