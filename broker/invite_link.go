package broker

import (
	"net/url"
	"strings"
)

// linkToken is the invitation an /authorize link carries: invitation=, or
// token= as an alias (mail tools and funnels that name it so). The alias
// takes only values that look like invitation tokens, so that a client's
// own "token" parameter is never read as one.
func linkToken(form url.Values) string {
	if v := form.Get("invitation"); v != "" {
		return v
	}
	if v := form.Get("token"); strings.HasPrefix(v, "inv_") {
		return v
	}
	return ""
}
