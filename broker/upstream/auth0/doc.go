// Package auth0 is the Auth0 upstream: an Auth0 tenant as usher's identity
// provider, and the Management API beside it.
//
// Upstream (upstream.go) is the generic OIDC upstream (upstream/oidc) with
// Auth0's conventions:
//   - login parameters: the app's connection and screen_hint as the generic
//     upstream forwards them, plus organization and invitation (Auth0
//     Organizations) and screen_hint=signup for an invitee the Management
//     API knows no account of;
//   - Organizations: org_id and org_name are copied from the ID token, and a
//     sign-in must be through the organization asked for (organizations.go);
//   - the connection of an identity from its `sub` prefix (ConnectionOf);
//   - no /userinfo call (Auth0 puts the scopes' claims in the ID token and
//     rate-limits /userinfo per user);
//   - /v2/logout when the tenant advertises no end_session_endpoint;
//   - the user ID claim (upstream.auth0.user_id_claim) for apps migrating
//     from Auth0's tokens;
//   - the HS256 advice names the Auth0 setting to change.
//
// Custom domains: a tenant answers at its canonical domain and at a custom
// domain with the same accounts and subjects, but "Auth0 issues tokens with
// the iss claim of whichever domain you used with the request"
// (https://auth0.com/docs/customize/custom-domains). Options.IdentityIssuer
// (config: the first of upstream.issuer_aliases, else the canonical domain
// upstream.auth0.management.domain) keeps identities under one issuer, so
// switching domains keeps every user.
//
// The Management API (Mirror: mirror.go, management.go, ratelimit.go,
// consumer.go) answers "has this email an account" (upstream.AccountFinder)
// and copies what invitations grant onto the Auth0 users
// (upstream.GrantMirror); New adds both capabilities when given a Mirror.
// Its calls keep to the tenant's budget (a Budget, shared by every replica
// on Redis), pause on Auth0's rate-limit headers, and give the login-path
// lookup priority over queued updates (ratelimit.go, "Pacing").
package auth0
