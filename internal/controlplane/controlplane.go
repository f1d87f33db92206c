// Package controlplane runs etcd and kube-apiserver on loopback from the binaries that
// hack/kube-binaries.sh builds: a static admin token, a self-signed CA and serving
// certificate, and a ServiceAccount signing key, much as controller-runtime's envtest
// does. The end-to-end benchmark (bench/cmd/kubescale) uses it.
package controlplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// BinDir is where hack/kube-binaries.sh puts its binaries: $WEIR_KUBE_BIN, else
// $HOME/.cache/weir/bin.
func BinDir() string {
	if d := os.Getenv("WEIR_KUBE_BIN"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "weir", "bin")
}

// HaveBinaries reports whether etcd and kube-apiserver are in dir.
func HaveBinaries(dir string) bool {
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// Cluster is a running etcd and kube-apiserver.
type Cluster struct {
	dir         string
	bin         string
	serviceCIDR string
	etcdURL     string
	port        int
	caPEM       []byte
	adminTok    string
	etcd        *exec.Cmd
	apiserver   *exec.Cmd
	exited      chan error
	apiLog      *os.File
}

// Start starts etcd and kube-apiserver with their files under dir and waits until the API
// server is ready. ServiceCIDR is the Service ClusterIP range (default 10.0.0.0/16).
func Start(dir, bin, serviceCIDR string) (*Cluster, error) {
	if serviceCIDR == "" {
		serviceCIDR = "10.0.0.0/16"
	}
	c := &Cluster{dir: dir, bin: bin, serviceCIDR: serviceCIDR, adminTok: "weir-admin-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	if err := c.writeCredentials(); err != nil {
		return nil, err
	}
	clientPort, err := freePort()
	if err != nil {
		return nil, err
	}
	peerPort, err := freePort()
	if err != nil {
		return nil, err
	}
	if c.port, err = freePort(); err != nil {
		return nil, err
	}
	c.etcdURL = fmt.Sprintf("http://127.0.0.1:%d", clientPort)
	peer := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	etcdLog, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		return nil, err
	}
	c.etcd = exec.Command(filepath.Join(bin, "etcd"),
		"--name=weir", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+c.etcdURL, "--advertise-client-urls="+c.etcdURL,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
		"--initial-cluster=weir="+peer, "--unsafe-no-fsync", "--quota-backend-bytes=8589934592",
		"--log-level=warn")
	c.etcd.Stdout, c.etcd.Stderr = etcdLog, etcdLog
	c.etcd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.etcd.Start(); err != nil {
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	if err := c.StartAPIServer(); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (c *Cluster) writeCredentials() error {
	// The serving certificate also names the first address of the Service range: the
	// "kubernetes" Service's ClusterIP, which in-cluster clients dial.
	svc, err := netip.ParsePrefix(c.serviceCIDR)
	if err != nil {
		return fmt.Errorf("service CIDR: %w", err)
	}
	kubernetesIP := svc.Masked().Addr().Next()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "weir-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.IP(kubernetesIP.AsSlice())},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	srvKeyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		return err
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	c.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	files := map[string][]byte{
		"ca.crt":     c.caPEM,
		"server.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}),
		"server.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: srvKeyDER}),
		"sa.key":     pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)}),
		"tokens.csv": []byte(c.adminTok + ",weir-admin,weir-admin,system:masters\n"),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(c.dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// StartAPIServer starts kube-apiserver (again, after StopAPIServer) with the same flags
// and port, and waits until /readyz answers.
func (c *Cluster) StartAPIServer() error {
	f := func(name string) string { return filepath.Join(c.dir, name) }
	logFile, err := os.OpenFile(f("kube-apiserver.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	c.apiLog = logFile
	c.apiserver = exec.Command(filepath.Join(c.bin, "kube-apiserver"),
		"--etcd-servers="+c.etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+strconv.Itoa(c.port),
		"--tls-cert-file="+f("server.crt"), "--tls-private-key-file="+f("server.key"),
		"--client-ca-file="+f("ca.crt"), "--token-auth-file="+f("tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+f("sa.key"), "--service-account-signing-key-file="+f("sa.key"),
		"--service-cluster-ip-range="+c.serviceCIDR,
		"--allow-privileged=true", "--profiling=false", "--v=1",
		"--max-requests-inflight=2000", "--max-mutating-requests-inflight=1000",
		"--cert-dir="+f("certs"),
	)
	c.apiserver.Stdout, c.apiserver.Stderr = logFile, logFile
	c.apiserver.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.apiserver.Start(); err != nil {
		return fmt.Errorf("start kube-apiserver: %w", err)
	}
	exited := make(chan error, 1)
	cmd := c.apiserver
	go func() { exited <- cmd.Wait() }()
	cs, err := kubernetes.NewForConfig(c.AdminConfig())
	if err != nil {
		return err
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error()
		cancel()
		if err == nil {
			c.exited = exited
			return nil
		}
		select {
		case werr := <-exited:
			return fmt.Errorf("kube-apiserver exited: %v (log %s)", werr, f("kube-apiserver.log"))
		case <-time.After(250 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-apiserver not ready after 3m: %v (log %s)", err, f("kube-apiserver.log"))
		}
	}
}

// StopAPIServer stops kube-apiserver and waits for it to exit; etcd keeps running.
func (c *Cluster) StopAPIServer() error {
	if c.apiserver == nil || c.apiserver.Process == nil {
		return errors.New("kube-apiserver not running")
	}
	_ = c.apiserver.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		_ = c.apiserver.Process.Kill()
		<-c.exited
	}
	c.apiserver = nil
	return c.apiLog.Close()
}

// Stop ends both processes and waits for them.
func (c *Cluster) Stop() {
	if c.apiserver != nil {
		_ = c.StopAPIServer()
	}
	if c.etcd != nil && c.etcd.Process != nil {
		_ = c.etcd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = c.etcd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = c.etcd.Process.Kill()
			<-done
		}
		c.etcd = nil
	}
}

// Host is the API server's URL.
func (c *Cluster) Host() string { return fmt.Sprintf("https://127.0.0.1:%d", c.port) }

// AdminToken is the static bearer token of a system:masters user.
func (c *Cluster) AdminToken() string { return c.adminTok }

// AdminConfig is a client config with the system:masters token.
func (c *Cluster) AdminConfig() *rest.Config { return c.TokenConfig(c.adminTok) }

// TokenConfig is a client config with a bearer token.
func (c *Cluster) TokenConfig(token string) *rest.Config {
	return &rest.Config{Host: c.Host(), BearerToken: token, QPS: 1000, Burst: 2000,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.caPEM}}
}

// WriteKubeconfig writes a kubeconfig with a bearer token to path.
func (c *Cluster) WriteKubeconfig(path, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["weir"] = &clientcmdapi.Cluster{Server: c.Host(), CertificateAuthorityData: c.caPEM}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["weir"] = &clientcmdapi.Context{Cluster: "weir", AuthInfo: "admin"}
	cfg.CurrentContext = "weir"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}

// ErrNoBinaries is returned by callers that find no binaries in BinDir.
var ErrNoBinaries = errors.New("etcd and kube-apiserver not found: run hack/kube-binaries.sh")
