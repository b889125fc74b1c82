// Package admin serves usher's admin surface: the admin JSON API under
// /api/ and (Page) the server-rendered admin page under /admin/. Both are
// thin over grants.Service: creating, revoking and resending an invitation
// are its use cases, which record their events in the same write; the audit
// log, webhooks, mail and the Auth0 mirror consume those events, never code
// in a handler here.
//
// The handlers hold no *broker.Broker. Each handler type (API, Page) is a
// struct of explicit dependencies: the parts of grants.Store it reads, the
// service, and small functions for what only the OpenID Provider knows
// (verifying an usher-issued access token, the browser session, the admin
// sign-in, an invitation's link). The broker fills them and calls Mount.
//
// Admin API routes (API.Mount), JSON in and out, every error an RFC 9457
// problem (application/problem+json, WriteProblem); the contract is
// openapi.json, which the e2e tests validate every call against. Every
// operation but the contract takes 'Authorization: Bearer <token>', a
// client_credentials access token usher issued with the scope named:
//
//	POST   /api/invitations                           invitations:write  create (Idempotency-Key replays)
//	GET    /api/invitations                           invitations:read   list, filter, page (next_cursor)
//	GET    /api/invitations/{id}                      invitations:read
//	DELETE /api/invitations/{id}                      invitations:write  revoke
//	POST   /api/invitations/{id}/resend               invitations:write  new link, previous one dead
//	GET    /api/users?q=&limit=&cursor=               invitations:read   by email prefix, paged (or ?email= exact)
//	POST   /api/users/{id}/sign-out                   invitations:write  sign out everywhere
//	DELETE /api/users/{id}                            invitations:write  erase
//	GET    /api/users/{id}/grants                     invitations:read
//	DELETE /api/users/{id}/grants/roles/{role}        invitations:write
//	DELETE /api/users/{id}/grants/claims/{key}        invitations:write
//	PUT    /api/users/{id}/grants/claims/{key}        invitations:write
//	GET    /api/audit                                 invitations:read
//	GET    /api/webhooks/{endpoint}/deliveries        invitations:read   (only with webhooks)
//	POST   /api/webhooks/deliveries/{id}/redeliver    invitations:write  (only with webhooks)
//	GET    /api/store/backup                          store:backup       the bbolt file, streamed (501 on Redis)
//	GET    /api/openapi.json                          no token
//	       /api/...                                   anything else: 404 problem
//
// Admin page routes (Page.Mount): server-rendered HTML, no script; a strict
// CSP with a nonce per response; every POST passes cross-origin protection
// and the session's synchronizer token, then answers 303. Only a user
// signed in through the admin sign-in who holds the admin role gets in.
//
//	GET  /admin/login                          Page.SignIn (the broker's upstream sign-in)
//	GET  /admin                                dashboard: invite form, list, search, pages
//	GET  /admin/                               303 to /admin
//	GET  /admin/invitations/{id}               detail and timeline; a fresh link, once
//	POST /admin/invitations                    create
//	POST /admin/invitations/{id}/revoke
//	POST /admin/invitations/{id}/resend
//	GET  /admin/users                          users by email prefix (?q=), pages
//	GET  /admin/users/{id}                     a user, their identities and grant
//	POST /admin/users/{id}/claims              set one claim of the grant
//	POST /admin/users/{id}/roles/remove        take a role back
//	POST /admin/users/{id}/claims/remove       take a claim back
//	POST /admin/users/{id}/sign-out            sign out everywhere
//	POST /admin/users/{id}/erase               erase the user
//	GET  /admin/audit                          the audit log, filters in the URL
//	POST /admin/logout                         end the browser session
//	GET  /admin/signed-out
//	     /admin/...                            anything else: 404 page
package admin
