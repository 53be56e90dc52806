package httpapi

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// clientAddrKey is the request-context key of the client address.
type clientAddrKey struct{}

// ClientAddr returns the address of the client that sent r, as the
// hardening middleware resolved it (see Config.TrustedProxies): the peer's
// address, or, when the peer is a trusted proxy, the right-most address of
// X-Forwarded-For that is not a trusted proxy. The zero Addr when r did not
// go through a Server (outside its handler, a request that came through
// its ConnContext has its peer's address).
func ClientAddr(r *http.Request) netip.Addr {
	a, _ := r.Context().Value(clientAddrKey{}).(netip.Addr)
	return a
}

// withClientAddr returns r with its client address resolved and stored:
// r itself when its context holds that address already (the peer's, from
// ConnContext), else a copy. (A copy of the request and a context cost
// about 400 bytes, for as long as a stream lasts.)
func (s *Server) withClientAddr(r *http.Request) *http.Request {
	a := resolveClientAddr(r.RemoteAddr, r.Header.Values("X-Forwarded-For"), s.cfg.TrustedProxies)
	if known, ok := r.Context().Value(clientAddrKey{}).(netip.Addr); ok && known == a {
		return r
	}
	return r.WithContext(context.WithValue(r.Context(), clientAddrKey{}, a))
}

// resolveClientAddr finds the client of a request that came from the peer
// remoteAddr ("host:port") with the given X-Forwarded-For header lines.
//
// Only a trusted proxy may speak for its client: X-Forwarded-For is read
// only when the peer is trusted, and then from the right, each hop being
// added by the proxy to its right, which the walk trusts. The first address
// that is not a trusted proxy is the client; everything to its left was
// written by that client (or its own proxies) and may be forged, so it is
// never looked at. When every listed address is a trusted proxy, the
// left-most one is the client. An entry that does not parse stops the
// walk at the last address known good.
func resolveClientAddr(remoteAddr string, forwardedFor []string, trusted []netip.Prefix) netip.Addr {
	peer := parseAddr(remoteAddr)
	if !peer.IsValid() || !isTrusted(peer, trusted) || len(forwardedFor) == 0 {
		return peer
	}
	client := peer
	for i := len(forwardedFor) - 1; i >= 0; i-- {
		hops := strings.Split(forwardedFor[i], ",")
		for j := len(hops) - 1; j >= 0; j-- {
			hop := strings.TrimSpace(hops[j])
			if hop == "" {
				continue
			}
			a := parseAddr(hop)
			if !a.IsValid() {
				return client
			}
			client = a
			if !isTrusted(a, trusted) {
				return a
			}
		}
	}
	return client
}

// parseAddr parses "ip", "ip:port", "[ipv6]:port" or "[ipv6]" and returns
// the address without a zone, IPv4-mapped IPv6 addresses as IPv4; the zero
// Addr when s is none of these.
func parseAddr(s string) netip.Addr {
	if host, _, err := net.SplitHostPort(s); err == nil {
		s = host
	} else {
		s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap().WithZone("")
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// addrKey is the key under which per-address limits count a client: the
// address itself for IPv4, its /64 network for IPv6, since one host
// usually holds a whole /64 and could otherwise pick a new address per
// request.
func addrKey(a netip.Addr) string {
	if !a.IsValid() {
		return "unknown"
	}
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// ParseCIDRs parses a comma-separated list of CIDR prefixes or single
// addresses (taken as /32 or /128), as --trusted-proxies takes them.
func ParseCIDRs(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, err
			}
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, err
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
