package store

import (
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"weir.dev/weir/internal/model"
)

func objects(names ...string) *model.Objects {
	o := &model.Objects{}
	for _, n := range names {
		o.Services = append(o.Services, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
	return o
}

func pending(s *Store) int {
	n := 0
	for {
		select {
		case <-s.Changed():
			n++
		default:
			return n
		}
	}
}

func TestStore(t *testing.T) {
	tests := []struct {
		name        string
		updates     []*model.Objects
		wantGen     uint64
		wantNotices int
		wantFirst   string
	}{
		{name: "empty", wantGen: 0, wantNotices: 0},
		{name: "one update", updates: []*model.Objects{objects("a")}, wantGen: 1, wantNotices: 1, wantFirst: "a"},
		{name: "updates coalesce", updates: []*model.Objects{objects("a"), objects("b"), objects("c")}, wantGen: 3, wantNotices: 1, wantFirst: "c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New()
			for _, u := range tt.updates {
				s.Update(u)
			}
			objs, gen := s.Current()
			if gen != tt.wantGen {
				t.Errorf("generation = %d, want %d", gen, tt.wantGen)
			}
			if n := pending(s); n != tt.wantNotices {
				t.Errorf("%d notifications pending, want %d", n, tt.wantNotices)
			}
			switch {
			case tt.wantFirst == "" && objs != nil:
				t.Errorf("Current = %v, want nil", objs)
			case tt.wantFirst != "" && (objs == nil || objs.Services[0].Name != tt.wantFirst):
				t.Errorf("Current is not the last update")
			}
		})
	}
}

func TestNotifyAfterReceive(t *testing.T) {
	s := New()
	s.Update(objects("a"))
	<-s.Changed()
	s.Update(objects("b"))
	select {
	case <-s.Changed():
	default:
		t.Fatal("no notification for an update after the previous one was received")
	}
}

func TestConcurrentUse(t *testing.T) {
	s := New()
	const writers, updates = 4, 250
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range updates {
				s.Update(objects("x"))
			}
		})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var last uint64
		for range writers * updates {
			_, gen := s.Current()
			if gen < last {
				t.Errorf("generation went back from %d to %d", last, gen)
				return
			}
			last = gen
		}
	}()
	wg.Wait()
	<-done
	if _, gen := s.Current(); gen != writers*updates {
		t.Errorf("generation = %d, want %d", gen, writers*updates)
	}
}
