// Package broker is usher's OpenID Provider: it serves the SPA with the
// zitadel/oidc op library, delegates every sign-in to the upstream (an
// upstream.Upstream: Auth0 or any OIDC issuer, chosen by app; upstream.go
// finds its optional capabilities), and adds the roles and claims a user
// holds to the tokens.
//
// A sign-in, one file per step:
//
//   - authorize (authorize.go handleAuthorize, storage.go CreateAuthRequest):
//     the SPA's request is checked and stored, with the invitation it
//     carries (invite.go authorizeInvitation);
//   - login (login.go), run by /authorize itself once it stored the request
//     (authorize_inline.go): answered from usher's own session when it can
//     (session.go; the session's ID names its user, read with the session,
//     browser.go), else the upstream leg starts with state, nonce and PKCE,
//     kept with the auth request and bound to the browser (loginstate.go);
//   - callback (callback.go): the state taken once (loginstate.go), the
//     upstream's answer verified, the usher user resolved (users.go), the
//     account remembered in the session;
//   - accept (accept.go, accept_authorize.go, accept_page.go): an invitation
//     binds only when the person presses Accept on usher's page; with an
//     email not verified yet, "verify your email, then continue"
//     (accept_verify.go);
//   - invite link (invite.go, invite_reference.go, invite_link.go): /invite/<token>
//     and the authorize link form;
//   - response: a code by redirect, form_post (formpost.go) or web_message
//     (webmessage.go), naming its subject (codes.go), or, for a request the
//     session answered, sealed: carrying the request, stored only when its
//     exchange spends it (sealedcode.go); tokens (tokens.go; ID tokens
//     written in one pass, idtoken.go), claims (claims.go), keys
//     (keyset.go);
//   - sign-out (signout.go): the session ends, its refresh tokens are
//     revoked, the upstream's logout follows.
//
// The admin API and the admin page live in broker/admin (admin.API,
// admin.Page), which never sees a *Broker: admin_deps.go hands them the
// service, the store and small functions for what only the OP knows (the
// access-token check, apitoken.go; the browser session; the admin sign-in
// through the upstream, adminauth.go; invitation links; the Auth0 mirror)
// and mounts them.
package broker
