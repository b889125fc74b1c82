package broker

import (
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/usher-oidc/usher/broker/upstream"
	"github.com/usher-oidc/usher/sessions"
)

// maxAgeSkew tolerates clock differences between usher and the upstream.
const maxAgeSkew = 30 * time.Second

// checkMaxAge enforces the client's max_age (OIDC Core §3.1.2.1) on the
// upstream's auth_time. usher forwards max_age upstream; an upstream that
// answers with an older authentication ignored it, so the sign-in fails
// with login_required rather than being retried with prompt=login: a retry
// could loop against such an upstream, and the client can start over.
// OIDC Core §2 makes auth_time mandatory when max_age was asked, so its
// absence fails too.
func (b *Broker) checkMaxAge(ar *sessions.AuthRequest, id *upstream.Identity) *oidc.Error {
	if ar.MaxAge == nil {
		return nil
	}
	if id.AuthTime.IsZero() {
		return oidc.ErrLoginRequired().WithDescription("the sign-in service did not say when the person signed in (auth_time), which max_age requires")
	}
	if b.now().Sub(id.AuthTime) > time.Duration(*ar.MaxAge)*time.Second+maxAgeSkew {
		return oidc.ErrLoginRequired().WithDescription("the person signed in longer ago than max_age allows; sign in again")
	}
	return nil
}
