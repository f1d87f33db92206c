package healthcheck

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"testing"

	"weir.dev/weir/internal/model"
)

func TestServerAnswersLocalEndpointCount(t *testing.T) {
	addrs := map[int32]string{}
	s := New(Options{Listen: func(port int32) (net.Listener, error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err == nil {
			addrs[port] = ln.Addr().String()
		}
		return ln, err
	}})
	t.Cleanup(s.Close)

	key := model.ServiceKey{Namespace: "shop", Name: "web"}
	tests := []struct {
		name       string
		local      int
		wantStatus int
	}{
		{"two local endpoints", 2, http.StatusOK},
		{"no local endpoint", 0, http.StatusServiceUnavailable},
		{"back to one", 1, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.Sync([]Service{{Key: key, Port: 30100, LocalEndpoints: tt.local}}); err != nil {
				t.Fatal(err)
			}
			resp, err := http.Get(fmt.Sprintf("http://%s/", addrs[30100]))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			var b body
			if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
				t.Fatal(err)
			}
			if b.Service.Namespace != "shop" || b.Service.Name != "web" || b.LocalEndpoints != tt.local {
				t.Errorf("body = %+v", b)
			}
		})
	}
	if err := s.Sync(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(fmt.Sprintf("http://%s/", addrs[30100])); err == nil {
		t.Error("port still served after its Service went away")
	}
}
