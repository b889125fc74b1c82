package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"strings"
)

// checkEdge checks the network edge: proxies, the metrics listener, and the
// URLs usher calls out to.
func (c *Config) checkEdge(p *problems) {
	s := c.Server
	for i, raw := range s.TrustedProxies {
		if _, err := ParseProxy(raw); err != nil {
			p.add(fmt.Sprintf("server.trusted_proxies[%d]", i), "%q must be a CIDR such as 10.0.0.0/8 or a single IP address", raw)
		}
	}
	switch {
	case s.ClientIPHeader == "" && len(s.TrustedProxies) > 0:
		p.add("server.client_ip_header", "required with server.trusted_proxies: %s or %s", HeaderXForwardedFor, HeaderForwarded)
	case s.ClientIPHeader != "" && s.ClientIPHeader != HeaderXForwardedFor && s.ClientIPHeader != HeaderForwarded:
		p.add("server.client_ip_header", "%q must be %s or %s (exactly one header is believed)", s.ClientIPHeader, HeaderXForwardedFor, HeaderForwarded)
	case s.ClientIPHeader != "" && len(s.TrustedProxies) == 0:
		p.add("server.trusted_proxies", "required with server.client_ip_header: without it the header would be ignored")
	}
	if c.Metrics.Listen == "" {
		p.add("metrics.listen", "required: host:port of the metrics listener, e.g. 127.0.0.1:9090")
	} else if msg := checkHostPort(c.Metrics.Listen, true); msg != "" {
		p.add("metrics.listen", "%q %s", c.Metrics.Listen, msg)
	} else if c.Metrics.Listen == c.Listen {
		p.add("metrics.listen", "%q must differ from listen: /metrics is not served on the public listener", c.Metrics.Listen)
	}
	// 0 is the default: configs written before this key existed keep working.
	if c.RateLimits.AuthorizePerMinute == 0 {
		c.RateLimits.AuthorizePerMinute = Default().RateLimits.AuthorizePerMinute
	}
	if v := c.RateLimits.AuthorizePerMinute; v < 1 {
		p.add("rate_limits.authorize_per_minute", "must be at least 1, got %d", v)
	}
	if h := c.Invitations.RedemptionHook.URL; h != "" {
		c.checkOutboundURL(p, "invitations.redemption_hook.url", h)
	}
	for i, w := range c.Webhooks {
		c.checkOutboundURL(p, fmt.Sprintf("webhooks[%d].url", i), w.URL)
	}
}

// checkOutboundURL refuses plain http for a URL usher posts signed data to,
// except in `usher dev` (where loopback http is what the tools run on);
// checkClientURL has already refused http on other hosts.
func (c *Config) checkOutboundURL(p *problems, path, raw string) {
	u, err := url.Parse(raw)
	if err != nil || c.Dev || !strings.EqualFold(u.Scheme, "http") {
		return
	}
	p.add(path, "%q must use https outside usher dev", raw)
}

// ParseProxy parses one server.trusted_proxies entry: a CIDR, or a single
// address meaning just that host.
func ParseProxy(raw string) (netip.Prefix, error) {
	raw = strings.TrimSpace(raw)
	if strings.Contains(raw, "/") {
		pfx, err := netip.ParsePrefix(raw)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("trusted proxy: %w", err)
		}
		return pfx.Masked(), nil
	}
	a, err := netip.ParseAddr(raw)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("trusted proxy: %w", err)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}
