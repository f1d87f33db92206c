package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"weir.dev/weir/internal/model"
)

// certTable selects a certificate by SNI (HTTPS listeners, and TLS listeners in mode
// Terminate): an exact name of a certificate, then a wildcard name, then the
// certificate of the section that serves the name, then the first certificate.
type certTable struct {
	exact    map[string]*tls.Certificate
	wildcard map[string]*tls.Certificate // by suffix ".example.com"
	sections []sectionCert
	first    *tls.Certificate
}

type sectionCert struct {
	hostname string
	cert     *tls.Certificate
}

func newCertTable(l *model.Listener) (*certTable, error) {
	t := &certTable{exact: map[string]*tls.Certificate{}, wildcard: map[string]*tls.Certificate{}}
	for _, sec := range l.Sections {
		for i, c := range sec.Certificates {
			cert, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
			if err != nil {
				return nil, fmt.Errorf("certificate %s: %w", c.Source, err)
			}
			leaf, err := x509.ParseCertificate(cert.Certificate[0])
			if err != nil {
				return nil, fmt.Errorf("certificate %s: %w", c.Source, err)
			}
			cert.Leaf = leaf
			names := leaf.DNSNames
			if len(names) == 0 && leaf.Subject.CommonName != "" {
				names = []string{leaf.Subject.CommonName}
			}
			for _, n := range names {
				n = strings.ToLower(n)
				if suffix, ok := strings.CutPrefix(n, "*"); ok {
					if _, dup := t.wildcard[suffix]; !dup {
						t.wildcard[suffix] = &cert
					}
				} else if _, dup := t.exact[n]; !dup {
					t.exact[n] = &cert
				}
			}
			if i == 0 {
				t.sections = append(t.sections, sectionCert{hostname: sec.Hostname, cert: &cert})
			}
			if t.first == nil {
				t.first = &cert
			}
		}
	}
	if t.first == nil {
		return nil, errors.New("no certificate to terminate TLS with")
	}
	return t, nil
}

func (t *certTable) get(sni string) (*tls.Certificate, error) {
	sni = strings.ToLower(strings.TrimSuffix(sni, "."))
	if c := t.exact[sni]; c != nil {
		return c, nil
	}
	if i := strings.IndexByte(sni, '.'); i > 0 {
		if c := t.wildcard[sni[i:]]; c != nil {
			return c, nil
		}
	}
	for _, s := range t.sections {
		if s.hostname == "" || s.hostname == sni || (strings.HasPrefix(s.hostname, "*.") && strings.HasSuffix(sni, s.hostname[1:])) {
			return s.cert, nil
		}
	}
	return t.first, nil
}
