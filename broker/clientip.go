package broker

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Client IP headers (config server.client_ip_header).
const (
	HeaderXForwardedFor = "X-Forwarded-For"
	HeaderForwarded     = "Forwarded"
)

// ClientIP says which reverse proxies to believe about the client's address.
// Zero value: the TCP peer is the client, headers are ignored.
type ClientIP struct {
	TrustedProxies []netip.Prefix
	Header         string // HeaderXForwardedFor or HeaderForwarded
}

type clientIPKey struct{}

// resolve is the client address of r: the TCP peer, unless the peer is a
// trusted proxy; then the rightmost address in Header that is not a trusted
// proxy (entries to its left are whatever the client claimed).
func (c ClientIP) resolve(r *http.Request) string {
	peer := peerAddr(r.RemoteAddr)
	if !peer.IsValid() {
		return r.RemoteAddr
	}
	if c.Header == "" || !c.trusted(peer) {
		return peer.String()
	}
	hops := forwardedFor(r.Header, c.Header)
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(hops[i])
		if err != nil {
			// A trusted proxy wrote something that is not an address: do not
			// guess further left, key on the proxy itself.
			return peer.String()
		}
		a = a.Unmap()
		if !c.trusted(a) || i == 0 {
			return a.String()
		}
	}
	return peer.String()
}

func (c ClientIP) trusted(a netip.Addr) bool {
	for _, p := range c.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func peerAddr(remote string) netip.Addr {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// forwardedFor lists the addresses of the header, leftmost first, across
// repeated header lines. Ports and IPv6 brackets are removed.
func forwardedFor(h http.Header, name string) []string {
	var out []string
	for _, line := range h.Values(name) {
		for _, elem := range strings.Split(line, ",") {
			elem = strings.TrimSpace(elem)
			if name == HeaderForwarded {
				elem = forwardedParam(elem, "for")
			}
			out = append(out, stripPort(elem))
		}
	}
	return out
}

// forwardedParam is the value of key in one RFC 7239 forwarded-element.
func forwardedParam(elem, key string) string {
	for _, pair := range strings.Split(elem, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if ok && strings.EqualFold(strings.TrimSpace(k), key) {
			return strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	return ""
}

func stripPort(s string) string {
	if strings.HasPrefix(s, "[") {
		if end := strings.IndexByte(s, ']'); end > 0 {
			return s[1:end]
		}
		return s
	}
	if strings.Count(s, ":") == 1 {
		host, _, _ := strings.Cut(s, ":")
		return host
	}
	return s
}

// withClientIP resolves the client address once per request, for the rate
// limits and for CreateAuthRequest (which sees only the context).
func (b *Broker) withClientIP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ip := b.opts.ClientIP.resolve(r)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), clientIPKey{}, ip)))
	})
}

func clientIPFrom(ctx context.Context) string {
	ip, _ := ctx.Value(clientIPKey{}).(string)
	return ip
}
