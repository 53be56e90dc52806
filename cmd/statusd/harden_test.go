package main

import (
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHardeningFlags(t *testing.T) {
	c, err := parseConfig(nil, env(nil), io.Discard)
	require.NoError(t, err)
	assert.Empty(t, c.harden.origins, "no CORS by default")
	assert.Zero(t, c.harden.maxClientsPerIP, "no per-address limit by default")
	assert.Zero(t, c.harden.publishRate, "no publish rate limit by default")
	assert.Equal(t, 10*time.Second, c.harden.readHeaderTimeout)
	assert.Equal(t, 10*time.Second, c.harden.readBodyTimeout)

	c, err = parseConfig([]string{"--cors-origins", "https://a.example.com, http://localhost:3000", "--publish-rate", "2.5"},
		env(map[string]string{
			"STATUSD_MAX_CLIENTS_PER_IP": "3", "STATUSD_TRUSTED_PROXIES": "10.0.0.0/8,192.168.0.1",
			"STATUSD_PUBLISH_BURST": "5", "STATUSD_READ_BODY_TIMEOUT": "2s", "STATUSD_READ_HEADER_TIMEOUT": "3s",
		}), io.Discard)
	require.NoError(t, err)
	assert.Equal(t, []string{"https://a.example.com", "http://localhost:3000"}, c.harden.origins)
	assert.Equal(t, 3, c.harden.maxClientsPerIP)
	assert.Equal(t, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.0.1/32")}, c.harden.proxies)
	assert.Equal(t, 2.5, c.harden.publishRate)
	assert.Equal(t, 5, c.harden.publishBurst)
	assert.Equal(t, 2*time.Second, c.harden.readBodyTimeout)
	assert.Equal(t, 3*time.Second, c.harden.readHeaderTimeout)

	for _, bad := range [][]string{
		{"--cors-origins", "*"}, {"--cors-origins", "https://a.example.com/path"}, {"--trusted-proxies", "10.0.0.0/40"},
		{"--trusted-proxies", "proxy.local"}, {"--max-clients-per-ip", "-1"}, {"--publish-rate", "-2"}, {"--publish-rate", "NaN"},
		{"--publish-burst", "-1"}, {"--read-body-timeout", "0s"}, {"--read-header-timeout", "-1s"},
	} {
		_, err := parseConfig(bad, env(nil), io.Discard)
		assert.Error(t, err, "%v", bad)
	}
}
