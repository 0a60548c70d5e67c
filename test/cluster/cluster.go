package cluster

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/refit-gitops/refit/test/toolcache"
)

//go:embed stages.yaml
var stagesTemplate string

// Options configure a local cluster. Start with DefaultOptions.
type Options struct {
	// Name of the cluster; one cache folder can hold several.
	Name string
	// Nodes is the number of kwok (simulated) nodes.
	Nodes int
	// PodsPerNode is each kwok node's Pod capacity.
	PodsPerNode int
	// StartDelay is how long a new container takes to start.
	StartDelay time.Duration
	// RestartDelay is how long an in-place container restart takes, from
	// the kill to the new container being ready.
	RestartDelay time.Duration
	// PullDelay is how long a kwok node takes to pull an image it does not
	// have yet (once per node and image); a Node annotation
	// kwok.refit.dev/pull-delay overrides it.
	PullDelay time.Duration
	// BadImagePattern is a regexp: an image matching it cannot be pulled.
	BadImagePattern string
	// CacheDir holds the built tools and the cluster state (CacheDir()).
	CacheDir string
	// Log receives progress lines (tool builds, cluster start).
	Log io.Writer
	// Ephemeral marks a cluster that belongs to this process (a test run):
	// a later Start removes it if this process died without calling Stop.
	Ephemeral bool
}

// The local cluster's address ranges: room for 65,534 Services and a
// million Pod IPs.
const (
	ServiceCIDR = "10.96.0.0/16"
	PodCIDR     = "10.64.0.0/12"
)

// DefaultBadImagePattern marks images that fail to pull on kwok nodes.
const DefaultBadImagePattern = `does-not-exist|:bad($|[-_.])`

// DefaultOptions are 4 nodes of 110 Pods with sub-second container starts.
func DefaultOptions() Options {
	return Options{
		Name:            "refit",
		Nodes:           4,
		PodsPerNode:     110,
		StartDelay:      500 * time.Millisecond,
		RestartDelay:    time.Second,
		BadImagePattern: DefaultBadImagePattern,
		Log:             io.Discard,
	}
}

// Cluster is a running local control plane.
type Cluster struct {
	Name string
	// Kubeconfig is the path of an admin kubeconfig for the cluster.
	Kubeconfig string
	Config     *rest.Config
	Client     kubernetes.Interface
	Tools      *Tools

	opts       Options
	kwokEnv    []string
	stateDir   string
	kubeletSim string // path of the simulator's binary, once built
}

// nodeAnnotation is what kwok's controller looks for to manage a node; nodes
// without it (hollow kubelets) are left to their own kubelet.
const (
	nodeAnnotationKey   = "kwok.x-k8s.io/node"
	nodeAnnotationValue = "fake"
	// NodeTypeLabel tells kwok nodes ("kwok") from hollow kubelets ("hollow").
	NodeTypeLabel = "refit.dev/node-type"
)

// Start builds the tools if needed and starts the cluster, or reuses a
// healthy one of the same name. On failure nothing it started is left behind.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if opts.CacheDir == "" {
		dir, err := CacheDir()
		if err != nil {
			return nil, err
		}
		opts.CacheDir = dir
	}
	tools, err := EnsureTools(ctx, opts.CacheDir, opts.Log)
	if err != nil {
		return nil, err
	}
	c := newCluster(opts, tools)
	if err := os.MkdirAll(c.stateDir, 0o755); err != nil {
		return nil, err
	}
	reapOrphans(ctx, opts.CacheDir, opts.Log)

	if c.exists(ctx) {
		if err := c.connect(ctx); err == nil {
			fmt.Fprintf(opts.Log, "reusing running cluster %q\n", c.Name)
			if err := c.ensureKubeletSim(ctx, false); err != nil {
				return nil, err
			}
			return c, c.ensureNodes(ctx)
		}
		fmt.Fprintf(opts.Log, "cluster %q is not healthy: recreating it\n", c.Name)
		_ = c.deleteKwok(context.WithoutCancel(ctx))
	}
	if err := c.create(ctx); err != nil {
		_ = c.Stop(context.WithoutCancel(ctx))
		return nil, err
	}
	return c, nil
}

// newCluster is a handle on the cluster opts.Name, running or not.
func newCluster(opts Options, tools *Tools) *Cluster {
	kwokDir := filepath.Join(opts.CacheDir, "kwok")
	return &Cluster{
		Name:       opts.Name,
		Kubeconfig: filepath.Join(kwokDir, "clusters", opts.Name, "kubeconfig.yaml"),
		Tools:      tools,
		opts:       opts,
		kwokEnv:    []string{"KWOK_WORKDIR=" + kwokDir},
		stateDir:   filepath.Join(opts.CacheDir, "clusters", opts.Name),
	}
}

func (o Options) validate() error {
	if !regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`).MatchString(o.Name) {
		return fmt.Errorf("cluster name %q: use lower-case letters, digits and dashes", o.Name)
	}
	if o.Nodes < 0 || o.PodsPerNode < 1 {
		return fmt.Errorf("cluster %s: nodes must be >= 0 and pods per node >= 1", o.Name)
	}
	if _, err := regexp.Compile(o.BadImagePattern); err != nil || o.BadImagePattern == "" {
		return fmt.Errorf("cluster %s: bad image pattern %q is not a regexp", o.Name, o.BadImagePattern)
	}
	if o.PullDelay < 0 {
		return fmt.Errorf("cluster %s: pull delay %s is negative", o.Name, o.PullDelay)
	}
	if o.Log == nil {
		return fmt.Errorf("cluster %s: Options.Log is nil (use io.Discard)", o.Name)
	}
	return nil
}

func (c *Cluster) create(ctx context.Context) error {
	start := time.Now()
	stages, err := renderStages(c.opts)
	if err != nil {
		return err
	}
	stagesPath := filepath.Join(c.stateDir, "stages.yaml")
	if err := os.WriteFile(stagesPath, stages, 0o644); err != nil {
		return err
	}
	if err := writeOwner(c.stateDir, c.opts.Ephemeral); err != nil {
		return err
	}
	fmt.Fprintf(c.opts.Log, "starting cluster %q (kube-apiserver, etcd, kube-controller-manager, kube-scheduler, kwok)\n", c.Name)
	// Built while the control plane starts, so it costs no start time.
	built := make(chan error, 1)
	go func() { built <- c.buildKubeletSim(ctx) }()
	_, err = c.kwokctl(ctx, "create", "cluster",
		"--runtime", "binary",
		"--kube-apiserver-binary", c.Tools.KubeAPIServer,
		"--kube-controller-manager-binary", c.Tools.KubeControllerManager,
		"--kube-scheduler-binary", c.Tools.KubeScheduler,
		"--etcd-binary", c.Tools.Etcd,
		"--kwok-controller-binary", c.Tools.Kwok,
		"--config", stagesPath,
		"--kubeconfig", filepath.Join(c.stateDir, "kwokctl-kubeconfig.yaml"),
		"--disable-qps-limits",
		// kwok would otherwise also drive hollow kubelets' nodes and Pods.
		"--extra-args", "kwok-controller=manage-all-nodes=false",
		"--extra-args", "kwok-controller=manage-nodes-with-annotation-selector="+nodeAnnotationKey+"="+nodeAnnotationValue,
		// Room for scale tests: the API server's default Service range
		// (10.0.0.0/24) ran out at 254 Services, and kwok's Pod IP pool
		// (10.0.0.0/24 by default) overlapped it.
		"--extra-args", "kube-apiserver=service-cluster-ip-range="+ServiceCIDR,
		"--extra-args", "kwok-controller=cidr="+PodCIDR,
		// One controller manager and one scheduler: leader election only
		// lets a burst of load (1,000 apps at once) make them miss a lease
		// renewal and exit, which no test wants to see.
		"--extra-args", "kube-controller-manager=leader-elect=false",
		"--extra-args", "kube-scheduler=leader-elect=false",
		"--wait", "2m",
	)
	if buildErr := <-built; err == nil && buildErr != nil {
		err = buildErr
	}
	if err != nil {
		return err
	}
	if err := c.connect(ctx); err != nil {
		return err
	}
	if err := c.ensureKubeletSim(ctx, true); err != nil {
		return err
	}
	if err := c.ensureNodes(ctx); err != nil {
		return err
	}
	fmt.Fprintf(c.opts.Log, "cluster %q ready in %s with %d kwok nodes\n", c.Name, time.Since(start).Round(100*time.Millisecond), c.opts.Nodes)
	return nil
}

func (c *Cluster) kwokctl(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, c.Tools.Kwokctl, append([]string{"--name", c.Name}, args...)...)
	cmd.Env = append(os.Environ(), c.kwokEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("kwokctl %s %s (cluster %s): %w\n%s", args[0], args[1], c.Name, err, toolcache.LastLines(stderr.String()+stdout.String(), 30))
	}
	return stdout.Bytes(), nil
}

func (c *Cluster) exists(ctx context.Context) bool {
	out, err := c.kwokctl(ctx, "get", "clusters")
	if err != nil {
		return false
	}
	for _, line := range strings.Fields(string(out)) {
		if line == c.Name {
			return true
		}
	}
	return false
}

// connect loads the kubeconfig and waits until the API server answers.
func (c *Cluster) connect(ctx context.Context) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return fmt.Errorf("cluster %s: load kubeconfig: %w", c.Name, err)
	}
	cfg.QPS, cfg.Burst = 200, 400
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := client.Discovery().ServerVersion()
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("cluster %s: API server at %s does not answer: %w", c.Name, cfg.Host, err)
	}
	c.Config, c.Client = cfg, client
	return nil
}

// ensureNodes creates the missing kwok nodes and waits for all to be Ready.
func (c *Cluster) ensureNodes(ctx context.Context) error {
	for i := 0; i < c.opts.Nodes; i++ {
		node := KwokNode(fmt.Sprintf("kwok-node-%d", i), c.opts.PodsPerNode)
		_, err := c.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("cluster %s: create node %s: %w", c.Name, node.Name, err)
		}
	}
	return c.WaitNodesReady(ctx, c.opts.Nodes, time.Minute)
}

// KwokNode is a Node object for kwok to simulate, with room for pods Pods.
func KwokNode(name string, pods int) *corev1.Node {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("1000"),
		corev1.ResourceMemory: resource.MustParse("1Ti"),
		corev1.ResourcePods:   *resource.NewQuantity(int64(pods), resource.DecimalSI),
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{nodeAnnotationKey: nodeAnnotationValue},
			Labels: map[string]string{
				"kubernetes.io/hostname": name,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     "amd64",
				NodeTypeLabel:            "kwok",
			},
		},
		Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
	}
}

// WaitNodesReady waits until at least n nodes report Ready.
func (c *Cluster) WaitNodesReady(ctx context.Context, n int, timeout time.Duration) error {
	var ready int
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		ready = 0
		for _, node := range nodes.Items {
			for _, cond := range node.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		return ready >= n, nil
	})
	if err != nil {
		return fmt.Errorf("cluster %s: %d of %d nodes Ready after %s: %w", c.Name, ready, n, timeout, err)
	}
	return nil
}

// Stop stops every process of the cluster (control plane, kwok, hollow
// kubelets) and removes its state.
func (c *Cluster) Stop(ctx context.Context) error {
	stopHollowNodes(c.stateDir)
	stopPIDFile(filepath.Join(c.stateDir, kubeletSimPID))
	err := c.deleteKwok(ctx)
	if rmErr := os.RemoveAll(c.stateDir); rmErr != nil && err == nil {
		err = rmErr
	}
	return err
}

func (c *Cluster) deleteKwok(ctx context.Context) error {
	if !c.exists(ctx) {
		return nil
	}
	_, err := c.kwokctl(ctx, "delete", "cluster")
	return err
}

// renderStages fills the Stage set's parameters.
func renderStages(opts Options) ([]byte, error) {
	tmpl, err := template.New("stages.yaml").Delims("<%", "%>").Option("missingkey=error").Parse(stagesTemplate)
	if err != nil {
		return nil, fmt.Errorf("parse stages.yaml: %w", err)
	}
	pattern, err := json.Marshal(opts.BadImagePattern) // a JSON string is a jq string literal
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	err = tmpl.Execute(&out, map[string]any{
		"StartDelayMS":   opts.StartDelay.Milliseconds(),
		"RestartDelayMS": opts.RestartDelay.Milliseconds(),
		// Both literals sit inside single-quoted YAML or a block scalar.
		"BadImageJQ": strings.ReplaceAll(string(pattern), "'", "''"),
		"BadImageGo": strconv.Quote(opts.BadImagePattern),
	})
	if err != nil {
		return nil, fmt.Errorf("render stages.yaml: %w", err)
	}
	return out.Bytes(), nil
}

// The owner file of an ephemeral cluster records the process that started
// it, so a later run can remove the clusters of test processes that died
// without cleaning up (SIGKILL, a CI timeout).
const ownerFile = "ephemeral-owner.pid"

func writeOwner(stateDir string, ephemeral bool) error {
	if !ephemeral {
		return nil
	}
	return os.WriteFile(filepath.Join(stateDir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644)
}

// EphemeralName names a cluster after this process, so that parallel test
// binaries do not share one.
func EphemeralName(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, os.Getpid())
}

// reapOrphans stops ephemeral clusters whose owner process is gone.
func reapOrphans(ctx context.Context, cacheDir string, log io.Writer) {
	entries, _ := os.ReadDir(filepath.Join(cacheDir, "clusters"))
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(cacheDir, "clusters", e.Name(), ownerFile))
		if err != nil {
			continue
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
		if pid == os.Getpid() || processAlive(pid) {
			continue
		}
		fmt.Fprintf(log, "removing cluster %q left by dead process %d\n", e.Name(), pid)
		tools, err := EnsureTools(ctx, cacheDir, log)
		if err != nil {
			return
		}
		_ = newCluster(Options{Name: e.Name(), CacheDir: cacheDir, Log: log}, tools).Stop(ctx)
	}
}

func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Stop stops the cluster named opts.Name, started by this or another
// process, and removes its state. Stopping a cluster that is not running is
// not an error.
func Stop(ctx context.Context, opts Options) error {
	if opts.CacheDir == "" {
		dir, err := CacheDir()
		if err != nil {
			return err
		}
		opts.CacheDir = dir
	}
	tools, err := EnsureTools(ctx, opts.CacheDir, opts.Log)
	if err != nil {
		return err
	}
	return newCluster(opts, tools).Stop(ctx)
}
