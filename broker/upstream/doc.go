// Package upstream is what the broker knows of the identity provider it
// delegates sign-in to: a small Upstream interface, the optional
// capabilities an upstream may add, and the types they share (the Identity
// a sign-in yields, the login and callback requests).
//
// The pattern is Dex's connector package: the broker holds an Upstream and
// finds each capability by type assertion, so an upstream without one
// behaves as if the feature were off:
//
//   - AccountFinder: "has this email an account at the upstream?" (the
//     invitee's sign-up screen);
//   - GrantMirror: grants are copied to the upstream (revocations follow);
//     its progress is on each invitation's timeline (mirrorstate.go);
//   - Organizations: sign-ins may go through an organization the app asks
//     for (Auth0 Organizations);
//   - LogoutRedirector: the upstream has a logout usher sends the browser
//     through when an usher session ends.
//
// The implementations live beside it: upstream/oidc is any OpenID Connect
// provider (go-oidc and x/oauth2); upstream/auth0 is an Auth0 tenant (the
// OIDC upstream with Auth0's conventions, plus the Management API). Only the
// program's wiring (app) picks one; the broker imports this package alone.
package upstream
