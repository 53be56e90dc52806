package main

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"net/netip"
	"time"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi"
)

// hardenFlags is the part of the configuration that protects the HTTP API
// from browsers of other sites and from misbehaving clients.
type hardenFlags struct {
	corsOrigins       string
	maxClientsPerIP   int
	trustedProxies    string
	publishRate       float64
	publishBurst      int
	readHeaderTimeout time.Duration
	readBodyTimeout   time.Duration

	// Parsed by check.
	origins []string
	proxies []netip.Prefix
}

func (h *hardenFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&h.corsOrigins, "cors-origins", "", "origins whose pages may call the API from a browser, exact, comma-separated (https://status.example.com,…); empty: no CORS headers")
	fs.IntVar(&h.maxClientsPerIP, "max-clients-per-ip", 0, "most concurrent streams per client address (IPv6: per /64); the next gets 429; 0: no limit")
	fs.StringVar(&h.trustedProxies, "trusted-proxies", "", "CIDRs of proxies whose X-Forwarded-For gives the client address, comma-separated; empty: none")
	fs.Float64Var(&h.publishRate, "publish-rate", 0, "POST /events per second per token subject (per client address without auth); over it 429; 0: no limit")
	fs.IntVar(&h.publishBurst, "publish-burst", 0, "burst of --publish-rate (default: the rate rounded up)")
	fs.DurationVar(&h.readHeaderTimeout, "read-header-timeout", 10*time.Second, "how long a client has to send its request header")
	fs.DurationVar(&h.readBodyTimeout, "read-body-timeout", 10*time.Second, "how long a client has to send a request body")
}

// check validates the flags and parses the lists.
func (h *hardenFlags) check() error {
	var err error
	if h.origins, err = httpapi.ParseOrigins(h.corsOrigins); err != nil {
		return fmt.Errorf("--cors-origins: %w", err)
	}
	if h.proxies, err = httpapi.ParseCIDRs(h.trustedProxies); err != nil {
		return fmt.Errorf("--trusted-proxies: %w", err)
	}
	switch {
	case h.maxClientsPerIP < 0:
		return errors.New("--max-clients-per-ip must not be negative")
	case h.publishRate < 0, math.IsNaN(h.publishRate), math.IsInf(h.publishRate, 0):
		return errors.New("--publish-rate must be a number ≥ 0")
	case h.publishBurst < 0:
		return errors.New("--publish-burst must not be negative")
	case h.readHeaderTimeout <= 0, h.readBodyTimeout <= 0:
		return errors.New("durations must be positive")
	}
	return nil
}
