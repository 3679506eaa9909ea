// Package testca gives a test the proxy's own MITM CA, made fresh in a
// temporary directory, and the issuer of its leaves. It is apart from
// testpki because the ca package's own tests use testpki.
package testca

import (
	"path/filepath"
	"testing"

	"github.com/inspectproxy/inspectproxy/ca"
)

// New makes a MITM CA and its issuer with default options.
func New(t testing.TB) (*ca.CA, *ca.Issuer) {
	t.Helper()
	c, err := ca.Init(filepath.Join(t.TempDir(), "ca"), false)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := ca.NewIssuer(c, ca.IssuerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c, iss
}
