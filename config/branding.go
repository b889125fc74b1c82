package config

import (
	"fmt"
	"strings"

	"github.com/usher-oidc/usher/internal/brand"
)

// Branding is what invitees see of the product besides its name (the
// client's name, else invitations.app_name) on usher's pages and in the
// invitation mail.
type Branding struct {
	// Logo is a PNG, JPEG or SVG file (at most 256 KiB), read at start and
	// served by usher itself under /brand/ (never a third-party URL, which
	// would tell that party who opens an invitation); mails embed it.
	Logo string `yaml:"logo"`
	// Accent is a "#RRGGBB" colour for buttons and the header rule; the text
	// on it is black or white, whichever keeps WCAG AA contrast.
	Accent string `yaml:"accent"`
}

func (c *Config) checkBranding(p *problems) {
	if c.Branding.Logo != "" {
		if _, err := brand.LoadLogo(c.Branding.Logo); err != nil {
			p.add("branding.logo", "%s", err)
		}
	}
	if _, err := brand.ParseAccent(c.Branding.Accent); err != nil {
		p.add("branding.accent", "%s, got %q", err, c.Branding.Accent)
	}
	for i, cl := range c.Clients {
		if strings.ContainsAny(cl.Name, "\r\n") {
			p.add(fmt.Sprintf("clients[%d].name", i), "must be one line: it is the display name in the invitation mail's subject and on usher's pages")
		}
	}
}
