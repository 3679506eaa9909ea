package timing

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no dial leaves an attempt or a lookup running.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
