package model

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// scaleObjects builds services Services with one port each and one EndpointSlice of
// perService endpoints, spread over 4 nodes, a tenth of them not ready.
func scaleObjects(services, perService int) *Objects {
	objs := &Objects{
		Services:       make([]*corev1.Service, 0, services),
		EndpointSlices: make([]*discoveryv1.EndpointSlice, 0, services),
	}
	nodes := []string{"node-a", "node-b", "node-c", "node-d"}
	for i := range services {
		name := fmt.Sprintf("svc-%05d", i)
		ns := fmt.Sprintf("ns-%02d", i%50)
		ip := fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)
		objs.Services = append(objs.Services, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.ServiceSpec{
				Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip},
				Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}},
			},
		})
		eps := make([]discoveryv1.Endpoint, perService)
		for j := range eps {
			n := i*perService + j
			eps[j] = discoveryv1.Endpoint{
				Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", 1+n/65536, n/256%256, n%256)},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr(j%10 != 9)},
				NodeName:   &nodes[n%len(nodes)],
			}
		}
		objs.EndpointSlices = append(objs.EndpointSlices, &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: ns, Name: name + "-abcde",
				Labels: map[string]string{discoveryv1.LabelServiceName: name},
			},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{slicePort("http", 8080)},
			Endpoints:   eps,
		})
	}
	return objs
}

// BenchmarkTranslate10kServices translates 10,000 Services × 10 endpoints. Besides
// ns/op and B/op it reports MB allocated per Translate and the MB the resulting
// Snapshot keeps live on the heap.
func BenchmarkTranslate10kServices(b *testing.B) {
	objs := scaleObjects(10000, 10)
	node := Node{Name: "node-a", Zone: "zone-a"}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var snap *Snapshot
	cpu0 := cpuTime()
	b.ReportAllocs()
	for b.Loop() {
		snap = Translate(objs, node)
	}
	runtime.ReadMemStats(&after)
	// CPU time (all threads, GC included) tells the cost apart from waiting on a
	// machine shared with other work, which ns/op includes.
	b.ReportMetric(float64((cpuTime()-cpu0).Milliseconds())/float64(b.N), "cpu-ms/op")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(b.N)/1e6, "MB-alloc/op")

	live := snapshotHeap(objs, node)
	b.ReportMetric(float64(live)/1e6, "MB-live")
	if len(snap.Services) != 10000 {
		b.Fatalf("got %d services", len(snap.Services))
	}
}

// snapshotHeap returns the heap bytes the Snapshot of objs keeps live.
func snapshotHeap(objs *Objects, node Node) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	snap := Translate(objs, node)
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(snap)
	runtime.KeepAlive(objs) // else the objects are freed during the measure
	if after.HeapAlloc < before.HeapAlloc {
		return 0
	}
	return after.HeapAlloc - before.HeapAlloc
}

// TestTranslateScale checks the scale target (10,000 Services × 10 endpoints in
// under 1 s and 200 MB) with margins wide enough for a loaded 2-core machine, and logs
// the figures: run with -v to see them.
func TestTranslateScale(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 100,000 endpoints")
	}
	objs := scaleObjects(10000, 10)
	node := Node{Name: "node-a", Zone: "zone-a"}

	start := time.Now()
	snap := Translate(objs, node)
	took := time.Since(start)
	live := snapshotHeap(objs, node)

	var eps int
	for _, s := range snap.Services {
		eps += len(s.Ports[0].Cluster.Endpoints)
	}
	if len(snap.Services) != 10000 || eps != 90000 {
		t.Fatalf("got %d services and %d cluster endpoints, want 10000 and 90000", len(snap.Services), eps)
	}
	rss := peakRSS()
	t.Logf("10,000 Services × 10 endpoints: first Translate %v, Snapshot live heap %.1f MB, test process peak RSS %.0f MB",
		took.Round(time.Millisecond), float64(live)/1e6, float64(rss)/1e6)
	if took > 10*time.Second {
		t.Errorf("Translate took %v; the target is under 1 s", took)
	}
	if live > 200e6 {
		t.Errorf("Snapshot keeps %.0f MB live; the target is under 200 MB", float64(live)/1e6)
	}
}

// cpuTime is the user and system CPU time of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// peakRSS reads VmHWM from /proc/self/status; 0 where that is unavailable.
func peakRSS() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb * 1024
		}
	}
	return 0
}
