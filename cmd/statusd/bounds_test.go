package main

import (
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The flags of the gateway's bounds: GET /projects concurrency and the
// minimum rate of a backlog.
func TestConfigBoundsFlags(t *testing.T) {
	c, err := parseConfig(nil, env(nil), io.Discard)
	require.NoError(t, err)
	assert.Equal(t, 4, c.maxListings)
	assert.Equal(t, 64<<10, c.minRate)

	c, err = parseConfig([]string{"--backlog-min-rate", "-1"}, env(map[string]string{"STATUSD_MAX_LISTINGS": "2"}), io.Discard)
	require.NoError(t, err)
	assert.Equal(t, 2, c.maxListings)
	assert.Equal(t, -1, c.minRate, "negative: no minimum")

	for _, bad := range [][]string{{"--max-listings", "0"}, {"--backlog-min-rate", "0"}, {"--max-listings", "x"}} {
		_, err := parseConfig(bad, env(nil), io.Discard)
		assert.Error(t, err, "%v", bad)
	}
}
