package kube

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"weir.dev/weir/internal/dataplane"
	"weir.dev/weir/internal/model"
	"weir.dev/weir/internal/runner"
	kubesource "weir.dev/weir/internal/source/kube"
	"weir.dev/weir/internal/store"
)

// childEnv makes the test binary run only weir's source, store and runner against the
// kubeconfig it names, for an RSS measurement of its own process.
const childEnv = "WEIR_E2E_KUBE_CHILD_KUBECONFIG"

// benchService is the i-th Service and its EndpointSlice of endpointsPer endpoints.
func benchService(ns string, i, endpointsPer int) (*corev1.Service, *discoveryv1.EndpointSlice) {
	name := fmt.Sprintf("svc-%05d", i)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for j := range endpointsPer {
		n := i*endpointsPer + j
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", 100+n>>16, (n>>8)&255, n&255)},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}, NodeName: ptr.To("node-a")})
	}
	return svc, es
}

// createServices creates Services [from, to) with their slices, 32 at a time.
func createServices(t *testing.T, cs kubernetes.Interface, ns string, from, to, endpointsPer int) {
	t.Helper()
	work := make(chan int)
	errs := make(chan error, 32)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for i := range work {
				svc, es := benchService(ns, i, endpointsPer)
				if _, err := cs.CoreV1().Services(ns).Create(context.Background(), svc, metav1.CreateOptions{}); err != nil {
					errs <- err
					return
				}
				if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(context.Background(), es, metav1.CreateOptions{}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	start := time.Now()
loop:
	for i := from; i < to; i++ {
		select {
		case work <- i:
		case err := <-errs:
			t.Errorf("create: %v", err)
			break loop
		}
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("create: %v", err)
	}
	t.Logf("created Services %d..%d with %d endpoints each in %v", from, to-1, endpointsPer, time.Since(start).Round(time.Millisecond))
}

// sliceEndpointCount finds a slice in objs (sorted by namespace and name).
func sliceEndpointCount(objs *model.Objects, ns, name string) int {
	i, ok := slices.BinarySearchFunc(objs.EndpointSlices, ns+"/"+name, func(es *discoveryv1.EndpointSlice, key string) int {
		return strings.Compare(es.Namespace+"/"+es.Name, key)
	})
	if !ok {
		return -1
	}
	return len(objs.EndpointSlices[i].Endpoints)
}

// latencies are sorted durations.
type latencies []time.Duration

func (l latencies) String() string {
	slices.Sort(l)
	q := func(p int) time.Duration { return l[len(l)*p/100].Round(100 * time.Microsecond) }
	return fmt.Sprintf("p50 %v p99 %v max %v", q(50), q(99), l[len(l)-1].Round(100*time.Microsecond))
}

// measurePropagation updates one slice at a time and times, from the start of the
// write: the write's response, a plain client watch receiving the event (the API
// server's own delivery), and the store having it.
func measurePropagation(t *testing.T, cs kubernetes.Interface, st *store.Store, ns string, services, samples int) (write, watch, toStore latencies) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	list, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	w, err := cs.DiscoveryV1().EndpointSlices(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	type seen struct {
		name string
		n    int
		at   time.Time
	}
	events := make(chan seen, 1024)
	go func() {
		for ev := range w.ResultChan() {
			if es, ok := ev.Object.(*discoveryv1.EndpointSlice); ok {
				events <- seen{es.Name, len(es.Endpoints), time.Now()}
			}
		}
	}()
	for k := range samples {
		i := (k * 7919) % services
		_, es := benchService(ns, i, 10)
		cur, err := cs.DiscoveryV1().EndpointSlices(ns).Get(ctx, es.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := 1 + k%9 // never 10, the starting count
		if len(cur.Endpoints) == want {
			want++
		}
		cur.Endpoints = es.Endpoints[:want]
		start := time.Now()
		if _, err := cs.DiscoveryV1().EndpointSlices(ns).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		write = append(write, time.Since(start))
		deadline := start.Add(10 * time.Second)
		var storeAt, watchAt time.Time
		for storeAt.IsZero() || watchAt.IsZero() {
			if objs, _ := st.Current(); storeAt.IsZero() && sliceEndpointCount(objs, ns, es.Name) == want {
				storeAt = time.Now()
			}
			if time.Now().After(deadline) {
				t.Fatalf("update %d never reached the store or the watch", k)
			}
			select {
			case ev := <-events:
				if ev.name == es.Name && ev.n == want {
					watchAt = ev.at
				}
			case <-st.Changed():
			case <-time.After(time.Millisecond):
			}
		}
		watch = append(watch, watchAt.Sub(start))
		toStore = append(toStore, storeAt.Sub(start))
	}
	return write, watch, toStore
}

// TestPropagationAndMemory is the benchmark of docs/kubernetes.md. It runs only with
// WEIR_E2E_KUBE_BENCH=1: it creates 10,000 Services with 100,000 endpoints.
func TestPropagationAndMemory(t *testing.T) {
	c := requireCluster(t)
	if os.Getenv("WEIR_E2E_KUBE_BENCH") == "" {
		t.Skip("set WEIR_E2E_KUBE_BENCH=1 to run the 10,000-Service benchmark")
	}
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(c.AdminConfig())
	const ns = "bench"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	st := store.New()
	// Only the bench namespace, so the other tests' objects do not count.
	runSource(t, c, c.AdminToken(), kubesource.Options{Store: st, Namespace: ns, Logger: nil})

	samples := 200
	if s, err := strconv.Atoi(os.Getenv("WEIR_E2E_KUBE_BENCH_SAMPLES")); err == nil && s > 0 {
		samples = s
	}
	created := 0
	for _, services := range []int{1000, 10000} {
		createServices(t, cs, ns, created, services, 10)
		created = services
		eventually(t, 2*time.Minute, "all services in the store", func() (bool, error) {
			objs, _ := st.Current()
			return objs != nil && len(objs.EndpointSlices) == services, nil
		})
		write, watch, toStore := measurePropagation(t, cs, st, ns, services, samples)
		t.Logf("at %d Services, %d samples, from the start of the EndpointSlice update:", services, samples)
		t.Logf("  write acknowledged:           %v", write)
		t.Logf("  plain watch has the event:    %v", watch)
		t.Logf("  weir's store has it:          %v", toStore)
		slices.Sort(toStore)
		if p99 := toStore[len(toStore)*99/100]; p99 > 100*time.Millisecond {
			t.Logf("p99 %v over the 100 ms target at %d Services (compare the plain watch above)", p99, services)
		}
	}

	rss, hwm := childRSS(t, c, ns)
	t.Logf("RSS of source+store+runner (translate, no-op data plane) at 10,000 Services / 100,000 endpoints: %d MB steady, %d MB peak", rss>>20, hwm>>20)
	if rss > 150<<20 {
		t.Errorf("RSS %d MB over the 150 MB target", rss>>20)
	}
}

// childRSS runs weir's source in a child process until it has synced and translated,
// and reads its resident set size.
func childRSS(t *testing.T, c *cluster, ns string) (rss, hwm int64) {
	t.Helper()
	kubeconfig := writeKubeconfig(t, c, c.AdminToken())
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+kubeconfig, "WEIR_E2E_KUBE_CHILD_NAMESPACE="+ns)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stdin.Close(); _ = cmd.Wait() }()
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if sc.Text() == "SYNCED" {
			break
		}
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && (f[0] == "VmRSS:" || f[0] == "VmHWM:") {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			if f[0] == "VmRSS:" {
				rss = kb << 10
			} else {
				hwm = kb << 10
			}
		}
	}
	return rss, hwm
}

// noopDataplane accepts every Snapshot.
type noopDataplane struct{}

func (noopDataplane) Name() string                                { return "noop" }
func (noopDataplane) Sync(context.Context, *model.Snapshot) error { return nil }

// runChild is the child process of childRSS: source, store and runner until stdin
// closes. It reports "SYNCED" on stdout once the runner has synced the full set.
func runChild(kubeconfig string) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := store.New()
	src, err := kubesource.New(kubesource.Options{Kubeconfig: kubeconfig, Store: st, Namespace: os.Getenv("WEIR_E2E_KUBE_CHILD_NAMESPACE")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	r, err := runner.New(runner.Options{Objects: st, Node: model.Node{Name: "node-a"}, Dataplanes: []dataplane.Dataplane{noopDataplane{}}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = src.Run(ctx) })
	wg.Go(func() { _ = r.Run(ctx) })
	for !src.Synced() || !r.Synced() || r.Snapshot() == nil || len(r.Snapshot().Services) == 0 {
		time.Sleep(50 * time.Millisecond)
	}
	// Let the runner finish translating the complete set, then return freed memory.
	time.Sleep(2 * time.Second)
	runtime.GC()
	debug.FreeOSMemory()
	fmt.Println("SYNCED")
	_, _ = io.Copy(io.Discard, os.Stdin)
	cancel()
	wg.Wait()
	return 0
}
