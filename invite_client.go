package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/usher-oidc/usher/client"
)

// apiClient is the admin API client (package client) with its errors told
// in the CLI's words: which flag or environment variable to fix.
type apiClient struct{ *client.Client }

// client builds the API client from flags, then the environment.
func (c *inviteCmd) client(scope string) (apiClient, error) {
	ac, err := newAPIClient(c.issuer, c.clientID, c.clientSecret, c.getenv, scope)
	var ue usageError
	if errors.As(err, &ue) {
		return apiClient{}, c.usagef("%s", string(ue))
	}
	return ac, err
}

// usageError is a connection setting the command line got wrong.
type usageError string

func (e usageError) Error() string { return string(e) }

// newAPIClient builds the API client of the commands that call the admin API
// (usher invite, usher store backup) from their connection flags, then the
// environment: USHER_ISSUER, USHER_CLIENT_ID, USHER_CLIENT_SECRET.
func newAPIClient(issuerFlag, idFlag, secretFlag string, getenv func(string) string, scope string) (apiClient, error) {
	pick := func(flagVal, env, def string) string {
		if flagVal != "" {
			return flagVal
		}
		if v := getenv(env); v != "" {
			return v
		}
		return def
	}
	issuer := pick(issuerFlag, "USHER_ISSUER", defaultIssuer)
	u, err := url.Parse(issuer)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return apiClient{}, usageError(fmt.Sprintf("--issuer %q is not an http(s) URL", issuer))
	}
	id := pick(idFlag, "USHER_CLIENT_ID", "")
	secret := pick(secretFlag, "USHER_CLIENT_SECRET", "")
	if id == "" || secret == "" {
		return apiClient{}, usageError(fmt.Sprintf("a client is required: set --client-id and --client-secret (or USHER_CLIENT_ID and USHER_CLIENT_SECRET) to a client allowed the client_credentials grant and the scope %s", scope))
	}
	return apiClient{&client.Client{
		Issuer: strings.TrimRight(issuer, "/"), ClientID: id, ClientSecret: secret, Scope: scope,
		HTTP: &http.Client{Timeout: time.Minute},
	}}, nil
}

// token gets the access token now: bad credentials fail once, not per row.
func (a apiClient) token(ctx context.Context) error {
	_, err := a.Token(ctx)
	return a.explain(err)
}

// explain words a client error for the command line. A *client.Problem is
// returned as it is: its text is the API's.
func (a apiClient) explain(err error) error {
	var te *client.TokenError
	var ue *client.UnreachableError
	switch {
	case errors.As(err, &te) && te.Kind == client.TokenBadCredentials:
		return fmt.Errorf("usher refused the client credentials of %q (%s): check --client-id and --client-secret (or USHER_CLIENT_ID and USHER_CLIENT_SECRET)",
			a.ClientID, client.JoinNonEmpty(": ", te.Code, te.Description))
	case errors.As(err, &te) && te.Kind == client.TokenNotAllowed:
		return fmt.Errorf("client %q may not manage invitations (%s): in usher's config, allow it the client_credentials grant and the scope %s",
			a.ClientID, client.JoinNonEmpty(": ", te.Code, te.Description), a.Scope)
	case errors.As(err, &te) && te.Code == "" && te.NotJSON:
		return fmt.Errorf("%s answered %s with something that is not a token response; is --issuer (%s) usher's issuer URL?", te.Endpoint, te.HTTPStatus, a.Issuer)
	case errors.As(err, &ue):
		// The default issuer is only right for `usher dev` on its default ports.
		return fmt.Errorf("cannot reach usher at %s (set --issuer or USHER_ISSUER to usher's issuer URL; default %s): %w",
			ue.Issuer, defaultIssuer, ue.Err)
	}
	return err
}

// invitationAnswer prints the API's answer as it came under --json (and
// returns nil, nil), or returns the invitation for the human-readable output.
func (c *inviteCmd) invitationAnswer(ac apiClient, inv *client.Invitation, rep *client.Reply, err error) (*client.Invitation, error) {
	if rep != nil && c.jsonOut {
		return nil, c.printJSON(rep.Body)
	}
	if err != nil {
		return nil, ac.explain(err)
	}
	return inv, nil
}
