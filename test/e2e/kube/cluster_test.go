package kube

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
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// cluster is etcd and kube-apiserver on loopback, started from the binaries that
// hack/kube-binaries.sh builds: a static admin token, self-signed serving certificates
// and a ServiceAccount signing key, much as controller-runtime's envtest does.
type cluster struct {
	dir       string
	bin       string
	etcdURL   string
	port      int
	caPEM     []byte
	adminTok  string
	etcd      *exec.Cmd
	apiserver *exec.Cmd
	// apiserverExited receives the running kube-apiserver's exit.
	apiserverExited chan error
	apiLog          *os.File
}

// binDir is where hack/kube-binaries.sh puts kube-apiserver and etcd.
func binDir() string {
	if d := os.Getenv("WEIR_KUBE_BIN"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "weir", "bin")
}

// haveBinaries reports whether both binaries exist.
func haveBinaries(dir string) bool {
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startCluster starts etcd and kube-apiserver under dir and waits until the API server
// is ready.
func startCluster(dir, bin string) (*cluster, error) {
	c := &cluster{dir: dir, bin: bin, adminTok: "weir-e2e-admin-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
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
		"--name=weir-e2e", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+c.etcdURL, "--advertise-client-urls="+c.etcdURL,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
		"--initial-cluster=weir-e2e="+peer, "--unsafe-no-fsync", "--quota-backend-bytes=4294967296",
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

// writeCredentials writes the CA, the serving certificate, the ServiceAccount key and
// the token file.
func (c *cluster) writeCredentials() error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "weir-e2e-ca"},
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
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1")},
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
		"tokens.csv": []byte(c.adminTok + ",weir-e2e-admin,weir-e2e-admin,system:masters\n"),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(c.dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// StartAPIServer starts kube-apiserver (again) with the same flags and port, and waits
// until /readyz answers.
func (c *cluster) StartAPIServer() error {
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
		"--service-cluster-ip-range=10.0.0.0/16",
		"--allow-privileged=true", "--profiling=false", "--v=1",
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
			c.apiserverExited = exited
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
func (c *cluster) StopAPIServer() error {
	if c.apiserver == nil || c.apiserver.Process == nil {
		return errors.New("kube-apiserver not running")
	}
	_ = c.apiserver.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.apiserverExited:
	case <-time.After(30 * time.Second):
		_ = c.apiserver.Process.Kill()
		<-c.apiserverExited
	}
	c.apiserver = nil
	return c.apiLog.Close()
}

// Stop ends both processes.
func (c *cluster) Stop() {
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
	}
}

// Host is the API server's URL.
func (c *cluster) Host() string { return fmt.Sprintf("https://127.0.0.1:%d", c.port) }

// AdminConfig is a client config with the system:masters token.
func (c *cluster) AdminConfig() *rest.Config {
	return c.TokenConfig(c.adminTok)
}

// TokenConfig is a client config with a bearer token.
func (c *cluster) TokenConfig(token string) *rest.Config {
	return &rest.Config{Host: c.Host(), BearerToken: token, QPS: 500, Burst: 1000,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.caPEM}}
}

// WriteKubeconfig writes a kubeconfig for token and returns its path.
func (c *cluster) WriteKubeconfig(t testing.TB, token string) string {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["e2e"] = &clientcmdapi.Cluster{Server: c.Host(), CertificateAuthorityData: c.caPEM}
	cfg.AuthInfos["weir"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: "weir"}
	cfg.CurrentContext = "e2e"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}
