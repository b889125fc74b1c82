package broker

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
)

func TestClientIPResolve(t *testing.T) {
	t.Parallel()
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	xff := ClientIP{TrustedProxies: proxies, Header: HeaderXForwardedFor}
	fwd := ClientIP{TrustedProxies: proxies, Header: HeaderForwarded}
	cases := []struct {
		name    string
		cfg     ClientIP
		peer    string
		headers map[string][]string
		want    string
	}{
		{"no config: peer", ClientIP{}, "203.0.113.5:4000", map[string][]string{"X-Forwarded-For": {"1.2.3.4"}}, "203.0.113.5"},
		{"untrusted peer: header ignored", xff, "203.0.113.5:4000", map[string][]string{"X-Forwarded-For": {"1.2.3.4"}}, "203.0.113.5"},
		{"trusted peer, one hop", xff, "10.1.1.1:4000", map[string][]string{"X-Forwarded-For": {"198.51.100.7"}}, "198.51.100.7"},
		{"client-supplied prefix ignored", xff, "10.1.1.1:4000", map[string][]string{"X-Forwarded-For": {"6.6.6.6, 198.51.100.7"}}, "198.51.100.7"},
		{"trusted hops skipped", xff, "10.1.1.1:4000", map[string][]string{"X-Forwarded-For": {"6.6.6.6, 198.51.100.7, 10.2.2.2"}}, "198.51.100.7"},
		{"several header lines", xff, "10.1.1.1:4000", map[string][]string{"X-Forwarded-For": {"6.6.6.6", "198.51.100.7, 10.2.2.2"}}, "198.51.100.7"},
		{"every hop trusted: leftmost", xff, "10.1.1.1:4000", map[string][]string{"X-Forwarded-For": {"10.3.3.3, 10.2.2.2"}}, "10.3.3.3"},
		{"no header from trusted peer: peer", xff, "10.1.1.1:4000", nil, "10.1.1.1"},
		{"garbage at the right: the proxy", xff, "10.1.1.1:4000", map[string][]string{"X-Forwarded-For": {"6.6.6.6, not-an-ip"}}, "10.1.1.1"},
		{"the other header is ignored", xff, "10.1.1.1:4000", map[string][]string{"Forwarded": {"for=198.51.100.7"}}, "10.1.1.1"},
		{"IPv4-mapped peer", xff, "[::ffff:10.1.1.1]:4000", map[string][]string{"X-Forwarded-For": {"198.51.100.7"}}, "198.51.100.7"},
		{"IPv6 hop", xff, "[fd00::1]:4000", map[string][]string{"X-Forwarded-For": {"2001:db8::7"}}, "2001:db8::7"},
		{"XFF with port", xff, "10.1.1.1:4000", map[string][]string{"X-Forwarded-For": {"198.51.100.7:5555"}}, "198.51.100.7"},
		{"Forwarded", fwd, "10.1.1.1:4000", map[string][]string{"Forwarded": {`for=6.6.6.6, for=198.51.100.7;proto=https;host=evil.example`}}, "198.51.100.7"},
		{"Forwarded IPv6 quoted with port", fwd, "10.1.1.1:4000", map[string][]string{"Forwarded": {`for="[2001:db8::7]:4711"`}}, "2001:db8::7"},
		{"Forwarded case-insensitive key", fwd, "10.1.1.1:4000", map[string][]string{"Forwarded": {`For=198.51.100.7`}}, "198.51.100.7"},
		{"Forwarded trusted hop skipped", fwd, "10.1.1.1:4000", map[string][]string{"Forwarded": {`for=198.51.100.7, for=10.2.2.2`}}, "198.51.100.7"},
		{"Forwarded obfuscated: the proxy", fwd, "10.1.1.1:4000", map[string][]string{"Forwarded": {`for=_hidden`}}, "10.1.1.1"},
		{"X-Forwarded-For ignored with Forwarded configured", fwd, "10.1.1.1:4000", map[string][]string{"X-Forwarded-For": {"198.51.100.7"}}, "10.1.1.1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tc.peer
			for k, vs := range tc.headers {
				for _, v := range vs {
					r.Header.Add(k, v)
				}
			}
			if got := tc.cfg.resolve(r); got != tc.want {
				t.Errorf("resolve = %q, want %q", got, tc.want)
			}
		})
	}
}
