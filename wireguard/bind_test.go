package wireguard

import (
	"net"
	"slices"
	"testing"

	"golang.org/x/net/ipv6"
)

// TestCoalesce holds the runs to udp(7)'s UDP_SEGMENT rules: every
// segment of a send the same size but the last, which may be shorter; at
// most 64 segments; the whole within one IP packet's length.
func TestCoalesce(t *testing.T) {
	sizes := func(n, size int) []int { return slices.Repeat([]int{size}, n) }
	for _, tc := range []struct {
		name string
		in   []int
		want [][]int // each message's packet sizes
	}{
		{"one", []int{1400}, [][]int{{1400}}},
		{"short tail ends a run", []int{1400, 1400, 800, 1400, 100}, [][]int{{1400, 1400, 800}, {1400, 100}}},
		{"larger starts a run", []int{100, 1400, 1400}, [][]int{{100}, {1400, 1400}}},
		{"64 segments", sizes(70, 100), [][]int{sizes(64, 100), sizes(6, 100)}},
		{"ip length", sizes(50, 1400), [][]int{sizes(46, 1400), sizes(4, 1400)}}, // 46×1400 ≤ 65507 < 47×1400
	} {
		t.Run(tc.name, func(t *testing.T) {
			bufs := make([][]byte, len(tc.in))
			for i, n := range tc.in {
				bufs[i] = make([]byte, n)
			}
			ms := make([]ipv6.Message, 128)
			n := coalesce(ms, bufs, &net.UDPAddr{}, true)
			var got [][]int
			for _, m := range ms[:n] {
				var run []int
				for _, b := range m.Buffers {
					run = append(run, len(b))
				}
				got = append(got, run)
				if gso := len(m.OOB) > 0; gso != (len(run) > 1) {
					t.Errorf("message %v: UDP_SEGMENT set = %v", run, gso)
				}
			}
			if !slices.EqualFunc(got, tc.want, slices.Equal) {
				t.Errorf("runs %v, want %v", got, tc.want)
			}
		})
	}
}
