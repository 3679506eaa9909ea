package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"testing"
)

func TestEchoServer(t *testing.T) {
	ca := NewCA(t, "test root")
	srv := StartTLS(t, &tls.Config{Certificates: []tls.Certificate{ca.Leaf(t, LeafOpts{Key: ECDSA256})}}, nil)
	c, err := tls.Dial("tcp", srv.Addr, &tls.Config{RootCAs: ca.Pool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo = %q, %v", buf, err)
	}
}

func TestWeakLeaves(t *testing.T) {
	ca := NewCA(t, "test root")
	for _, tc := range []struct {
		name string
		o    LeafOpts
		want func(*x509.Certificate) bool
	}{
		{"rsa1024", LeafOpts{Key: RSA1024}, func(c *x509.Certificate) bool { return c.PublicKeyAlgorithm == x509.RSA }},
		{"sha1", LeafOpts{SigAlg: x509.ECDSAWithSHA1}, func(c *x509.Certificate) bool {
			return c.SignatureAlgorithm == x509.ECDSAWithSHA1 || c.SignatureAlgorithm == x509.SHA1WithRSA
		}},
		{"self-signed", LeafOpts{SelfSigned: true}, func(c *x509.Certificate) bool { return c.Issuer.String() == c.Subject.String() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if c := ca.Leaf(t, tc.o).Leaf; !tc.want(c) {
				t.Fatalf("leaf %v does not have the property", c.Subject)
			}
		})
	}
}
