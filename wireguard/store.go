package wireguard

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/renameio/v2/maybe"
	"github.com/skip2/go-qrcode"
)

// Key is a Curve25519 key, private or public.
type Key [32]byte

// ParseKey reads a key in the base64 form of wg(8) and wg-quick configs.
func ParseKey(s string) (Key, error) {
	var k Key
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != len(k) {
		return k, fmt.Errorf("wireguard: key %.8q…: want 32 bytes in base64", s)
	}
	copy(k[:], b)
	return k, nil
}

// NewPrivateKey makes a random private key, clamped as wg genkey does.
func NewPrivateKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return k, fmt.Errorf("wireguard: generate key: %w", err)
	}
	k[0] &= 248
	k[31] = k[31]&127 | 64
	return k, nil
}

// Public is the public key of a private key.
func (k Key) Public() Key {
	priv, err := ecdh.X25519().NewPrivateKey(k[:])
	if err != nil { // only for a wrong length, which Key cannot have
		panic(err)
	}
	var pub Key
	copy(pub[:], priv.PublicKey().Bytes())
	return pub
}

// String is the base64 form.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// hex is the form wireguard-go's configuration protocol takes.
func (k Key) hex() string { return hex.EncodeToString(k[:]) }

// MarshalText and UnmarshalText store keys in base64.
func (k Key) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText reads the base64 form.
func (k *Key) UnmarshalText(b []byte) error {
	v, err := ParseKey(string(b))
	*k = v
	return err
}

// Peer is one device allowed into the tunnel.
type Peer struct {
	Name string `json:"name"`
	// PrivateKey is kept so that the peer's config can be shown again
	// (the setup page, `peer list --config`); the file is mode 0600.
	PrivateKey Key `json:"private_key"`
	PublicKey  Key `json:"public_key"`
	// Addresses are the peer's tunnel addresses (IPv4, and IPv6 when a
	// network6 is configured).
	Addresses []netip.Addr `json:"addresses"`
	Created   time.Time    `json:"created"`
}

// Store keeps the server key and the peers in a directory (the config
// directory's wireguard/): server.key and peers.json, both mode 0600,
// written atomically so that a crash never leaves half a key.
type Store struct{ dir string }

// NewStore uses dir, creating it (0700) on the first write.
func NewStore(dir string) *Store { return &Store{dir: dir} }

// Dir is the directory.
func (s *Store) Dir() string { return s.dir }

const (
	serverKeyFile = "server.key"
	peersFile     = "peers.json"
)

// ServerKey returns the server's private key, generating it on first use.
func (s *Store) ServerKey() (Key, error) {
	p := filepath.Join(s.dir, serverKeyFile)
	b, err := os.ReadFile(p)
	if err == nil {
		k, err := ParseKey(string(b))
		if err != nil {
			return k, fmt.Errorf("%s: %w", p, err)
		}
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return Key{}, fmt.Errorf("wireguard: %w", err)
	}
	k, err := NewPrivateKey()
	if err != nil {
		return k, err
	}
	return k, s.write(serverKeyFile, []byte(k.String()+"\n"))
}

func (s *Store) write(name string, b []byte) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("wireguard: %w", err)
	}
	if err := maybe.WriteFile(filepath.Join(s.dir, name), b, 0o600); err != nil {
		return fmt.Errorf("wireguard: %w", err)
	}
	return nil
}

// Peers lists the peers in the order they were added.
func (s *Store) Peers() ([]Peer, error) {
	p := filepath.Join(s.dir, peersFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("wireguard: %w", err)
	}
	var peers []Peer
	if err := json.Unmarshal(b, &peers); err != nil {
		return nil, fmt.Errorf("wireguard: %s: %w", p, err)
	}
	return peers, nil
}

// Peer returns the named peer.
func (s *Store) Peer(name string) (Peer, error) {
	peers, err := s.Peers()
	if err != nil {
		return Peer{}, err
	}
	if i := slices.IndexFunc(peers, func(p Peer) bool { return p.Name == name }); i >= 0 {
		return peers[i], nil
	}
	return Peer{}, fmt.Errorf("wireguard: no peer %q", name)
}

var peerName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// AddPeer creates a peer with new keys and the lowest free host number
// in network (and the same host number in network6, if valid); the
// network's first host is the server's.
func (s *Store) AddPeer(name string, network, network6 netip.Prefix) (Peer, error) {
	if !peerName.MatchString(name) {
		return Peer{}, fmt.Errorf("wireguard: peer name %q: want 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	peers, err := s.Peers()
	if err != nil {
		return Peer{}, err
	}
	used := map[netip.Addr]bool{}
	for _, p := range peers {
		if p.Name == name {
			return Peer{}, fmt.Errorf("wireguard: peer %q exists (remove it first)", name)
		}
		for _, a := range p.Addresses {
			used[a] = true
		}
	}
	var addrs []netip.Addr
	for host := 2; ; host++ {
		a, ok := nthHost(network, host)
		if !ok {
			return Peer{}, fmt.Errorf("wireguard: network %s is full (%d peers)", network, len(peers))
		}
		if !used[a] {
			addrs = append(addrs, a)
			if a6, ok := nthHost(network6, host); ok {
				addrs = append(addrs, a6)
			}
			break
		}
	}
	priv, err := NewPrivateKey()
	if err != nil {
		return Peer{}, err
	}
	p := Peer{Name: name, PrivateKey: priv, PublicKey: priv.Public(), Addresses: addrs, Created: time.Now().UTC().Truncate(time.Second)}
	return p, s.savePeers(append(peers, p))
}

// RemovePeer deletes a peer; its device can no longer connect.
func (s *Store) RemovePeer(name string) error {
	peers, err := s.Peers()
	if err != nil {
		return err
	}
	i := slices.IndexFunc(peers, func(p Peer) bool { return p.Name == name })
	if i < 0 {
		return fmt.Errorf("wireguard: no peer %q", name)
	}
	return s.savePeers(slices.Delete(peers, i, i+1))
}

func (s *Store) savePeers(peers []Peer) error {
	b, err := json.MarshalIndent(peers, "", "  ")
	if err != nil {
		return fmt.Errorf("wireguard: %w", err)
	}
	return s.write(peersFile, append(b, '\n'))
}

// nthHost is the n-th address of p (n = 1 is the first after the network
// address), if p holds it and it is not the last (broadcast) address.
func nthHost(p netip.Prefix, n int) (netip.Addr, bool) {
	if !p.IsValid() {
		return netip.Addr{}, false
	}
	a := p.Masked().Addr()
	for range n {
		a = a.Next()
	}
	if !p.Contains(a) || !p.Contains(a.Next()) {
		return netip.Addr{}, false
	}
	return a, true
}

// ClientConfig is the wg-quick config a device imports: its key and
// addresses, the tunnel's DNS server, and the server as its only peer,
// routing everything (AllowedIPs 0.0.0.0/0, ::/0) through the tunnel.
func ClientConfig(p Peer, server Key, endpoint string, dns []netip.Addr, mtu int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[Interface]\nPrivateKey = %s\n", p.PrivateKey)
	fmt.Fprintf(&b, "Address = %s\n", joinAddrs(p.Addresses, true))
	fmt.Fprintf(&b, "DNS = %s\n", joinAddrs(dns, false))
	fmt.Fprintf(&b, "MTU = %d\n", mtu)
	fmt.Fprintf(&b, "\n[Peer]\nPublicKey = %s\n", server.Public())
	fmt.Fprintf(&b, "Endpoint = %s\n", endpoint)
	b.WriteString("AllowedIPs = 0.0.0.0/0, ::/0\nPersistentKeepalive = 25\n")
	return b.String()
}

func joinAddrs(addrs []netip.Addr, prefix bool) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		if prefix {
			s[i] = netip.PrefixFrom(a, a.BitLen()).String()
		} else {
			s[i] = a.String()
		}
	}
	return strings.Join(s, ", ")
}

// QR renders text as a QR code for a terminal, two modules per character
// cell (Unicode half blocks). The blocks are the light modules and the
// quiet zone, so it reads right on a dark-background terminal, the
// common case (like qrencode -t UTF8); the WireGuard apps scan it.
func QR(text string) (string, error) {
	q, err := qrcode.New(text, qrcode.Medium)
	if err != nil {
		return "", fmt.Errorf("wireguard: QR code: %w", err)
	}
	return q.ToSmallString(false), nil
}
