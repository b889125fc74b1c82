// Package client is a Go client for usher's admin API (/api/...), and the
// home of the API's wire types: the server's handlers (broker/admin) write
// the same Invitation, InvitationList and Problem this package reads, and
// decode the CreateRequest it sends, so the two cannot drift apart; the
// contract they both follow is broker/admin/openapi.json.
//
// A Client gets a client_credentials access token from usher's token
// endpoint on first use (and once more when a call answers 401, in case it
// expired), then calls the API with it. A 4xx or 5xx answer is returned as
// a *Problem; a refused token request as a *TokenError; a transport failure
// as an *UnreachableError.
//
// Backup streams the store's online snapshot (scope ScopeStoreBackup) into
// an io.Writer.
//
// `usher invite` and `usher store backup` (the root package) are thin
// layers over this package.
package client
