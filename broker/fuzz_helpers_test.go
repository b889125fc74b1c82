package broker_test

import (
	"net/url"
	"strings"
	"time"
)

func timeNow() time.Time { return time.Now() }

// sameOriginPath: a relative redirect that stays on this origin.
func sameOriginPath(loc string) bool {
	u, err := url.Parse(loc)
	return err == nil && u.Scheme == "" && u.Host == "" && strings.HasPrefix(loc, "/") && !strings.HasPrefix(loc, "//") && !strings.HasPrefix(loc, "/\\")
}
