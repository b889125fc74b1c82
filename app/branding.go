package app

import (
	"fmt"

	"github.com/usher-oidc/usher/broker"
	"github.com/usher-oidc/usher/config"
	"github.com/usher-oidc/usher/internal/brand"
)

// loadBranding reads branding.logo once, at start (config validation
// checked it already; a file changed since is reported again).
func loadBranding(cfg *config.Config) (broker.Branding, error) {
	var b broker.Branding
	if cfg.Branding.Logo != "" {
		logo, err := brand.LoadLogo(cfg.Branding.Logo)
		if err != nil {
			return b, fmt.Errorf("branding.logo: %w", err)
		}
		b.Logo = logo
	}
	accent, err := brand.ParseAccent(cfg.Branding.Accent)
	if err != nil {
		return b, fmt.Errorf("branding.accent: %w", err)
	}
	b.Accent = accent
	return b, nil
}

// clientNames maps client IDs to their display names (clients[].name).
// An invitation without client_id continues to the only public client with
// redirect URIs, as the broker's pages do: key "" names that one.
func clientNames(cfg *config.Config) map[string]string {
	names := map[string]string{}
	only, public := "", 0
	for _, c := range cfg.Clients {
		if c.Name != "" {
			names[c.ID] = c.Name
		}
		if c.IsPublic() && len(c.RedirectURIs) > 0 {
			only, public = c.Name, public+1
		}
	}
	if public == 1 && only != "" {
		names[""] = only
	}
	return names
}
