package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/usher-oidc/usher/grants"
)

// Client calls usher's admin API with a client_credentials token.
type Client struct {
	// Issuer is usher's issuer URL; the API and the token endpoint are under it.
	Issuer       string
	ClientID     string
	ClientSecret string
	// Scope is what the token asks for (ScopeRead, ScopeWrite, or both
	// separated by a space).
	Scope string
	// HTTP sends the requests (nil: http.DefaultClient).
	HTTP *http.Client

	accessToken string
}

// Reply is an API answer with a 2xx status.
type Reply struct {
	Status int
	Body   []byte
	// Replayed: the first answer to this Idempotency-Key, replayed.
	Replayed bool
}

// TokenError: usher's token endpoint gave no access token.
type TokenError struct {
	Endpoint string
	// HTTPStatus is the answer's status line ("401 Unauthorized").
	HTTPStatus  string
	Code        string // the OAuth error code, when the answer had one
	Description string
	// NotJSON: the answer was not a token response at all (a wrong issuer URL).
	NotJSON bool
	// Kind sorts the refusal (TokenBadCredentials, TokenNotAllowed, TokenOther).
	Kind TokenErrorKind
}

// TokenErrorKind sorts why no token came.
type TokenErrorKind int

const (
	// TokenOther: any other refusal, or no token in the answer.
	TokenOther TokenErrorKind = iota
	// TokenBadCredentials: usher does not know this client and secret.
	TokenBadCredentials
	// TokenNotAllowed: the client may not use the grant or the scope.
	TokenNotAllowed
)

func (e *TokenError) Error() string {
	switch {
	case e.Kind == TokenBadCredentials:
		return "usher refused the client credentials (" + JoinNonEmpty(": ", e.Code, e.Description) + ")"
	case e.Kind == TokenNotAllowed:
		return "the client may not manage invitations (" + JoinNonEmpty(": ", e.Code, e.Description) + ")"
	case e.Code != "":
		return fmt.Sprintf("getting an access token from %s failed: %s", e.Endpoint, JoinNonEmpty(": ", e.Code, e.Description))
	case e.NotJSON:
		return fmt.Sprintf("%s answered %s with something that is not a token response", e.Endpoint, e.HTTPStatus)
	}
	return fmt.Sprintf("%s answered %s without an access token", e.Endpoint, e.HTTPStatus)
}

// UnreachableError: the request did not reach usher (or no answer came).
type UnreachableError struct {
	Issuer string
	Err    error // the cause, without net/url's wrapping
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach usher at %s: %v", e.Issuer, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

func (c *Client) base() string { return strings.TrimRight(c.Issuer, "/") }

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

func (c *Client) unreachable(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return &UnreachableError{Issuer: c.base(), Err: err}
}

// Token returns an access token, asking usher's token endpoint the first time.
func (c *Client) Token(ctx context.Context) (string, error) {
	if c.accessToken != "" {
		return c.accessToken, nil
	}
	endpoint := c.base() + "/oauth/token"
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {c.Scope}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	// RFC 6749 §2.3.1: the credentials are form-encoded before Basic encoding.
	req.SetBasicAuth(url.QueryEscape(c.ClientID), url.QueryEscape(c.ClientSecret))
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return "", c.unreachable(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var tr struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	jsonErr := json.Unmarshal(raw, &tr)
	if resp.StatusCode == http.StatusOK && tr.AccessToken != "" {
		c.accessToken = tr.AccessToken
		return tr.AccessToken, nil
	}
	te := &TokenError{Endpoint: endpoint, HTTPStatus: resp.Status, Code: tr.Error, Description: tr.Description, NotJSON: jsonErr != nil}
	switch {
	case tr.Error == "invalid_client" || (tr.Error == "" && resp.StatusCode == http.StatusUnauthorized) ||
		strings.Contains(strings.ToLower(tr.Description), "client credentials"): // some servers answer server_error
		te.Kind = TokenBadCredentials
	case tr.Error == "unauthorized_client" || tr.Error == "invalid_scope":
		te.Kind = TokenNotAllowed
	}
	return "", te
}

// Do calls the API: method on path (with its query), body, when not nil,
// sent as JSON. A 4xx/5xx answer is returned as a *Problem.
func (c *Client) Do(ctx context.Context, method, path string, body any, hdr http.Header) (*Reply, error) {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return nil, err
		}
	}
	for attempt := 0; ; attempt++ {
		tok, err := c.Token(ctx)
		if err != nil {
			return nil, err
		}
		var rd io.Reader
		if payload != nil {
			rd = bytes.NewReader(payload)
		}
		req, err := http.NewRequestWithContext(ctx, method, c.base()+path, rd)
		if err != nil {
			return nil, err
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Accept", "application/json, application/problem+json")
		if payload != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.httpClient().Do(req)
		if err != nil {
			return nil, c.unreachable(err)
		}
		raw, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("reading usher's answer to %s %s: %v", method, path, err)
		}
		if resp.StatusCode == http.StatusUnauthorized && attempt == 0 {
			c.accessToken = "" // expired during a long import: get a new one, once
			continue
		}
		if resp.StatusCode >= 400 {
			return nil, newProblem(resp, raw)
		}
		return &Reply{Status: resp.StatusCode, Body: raw, Replayed: resp.Header.Get("Idempotent-Replayed") == "true"}, nil
	}
}

func newProblem(resp *http.Response, raw []byte) *Problem {
	p := &Problem{}
	if json.Unmarshal(raw, p) != nil || p.Title == "" {
		// Not a problem document (a proxy's error page, say): show what came.
		p = &Problem{Title: http.StatusText(resp.StatusCode)}
		if text := strings.TrimSpace(string(raw)); text != "" {
			if len(text) > 300 {
				text = text[:300] + "…"
			}
			p.Detail = text
		}
		if p.Title == "" {
			p.Title = "HTTP error"
		}
	}
	p.Status = resp.StatusCode
	return p
}

// decode reads a 2xx answer into v.
func decode(rep *Reply, v any) error {
	if err := json.Unmarshal(rep.Body, v); err != nil {
		return fmt.Errorf("unreadable answer from usher: %v", err)
	}
	return nil
}

// invitation calls the API and reads an Invitation from its answer.
func (c *Client) invitation(ctx context.Context, method, path string, body any, hdr http.Header) (*Invitation, *Reply, error) {
	rep, err := c.Do(ctx, method, path, body, hdr)
	if err != nil {
		return nil, nil, err
	}
	var inv Invitation
	if err := decode(rep, &inv); err != nil {
		return nil, rep, err
	}
	return &inv, rep, nil
}

// CreateInvitation creates an invitation (POST /api/invitations). With an
// idempotencyKey, a retry replays the first answer (Reply.Replayed). A 200
// without URL: a pending invitation with the same external_id, returned.
func (c *Client) CreateInvitation(ctx context.Context, req CreateRequest, idempotencyKey string) (*Invitation, *Reply, error) {
	hdr := http.Header{}
	if idempotencyKey != "" {
		hdr.Set("Idempotency-Key", idempotencyKey)
	}
	return c.invitation(ctx, http.MethodPost, "/api/invitations", req, hdr)
}

// GetInvitation reads one invitation.
func (c *Client) GetInvitation(ctx context.Context, id string) (*Invitation, *Reply, error) {
	return c.invitation(ctx, http.MethodGet, "/api/invitations/"+url.PathEscape(id), nil, nil)
}

// RevokeInvitation revokes a pending invitation: its link stops working.
func (c *Client) RevokeInvitation(ctx context.Context, id string) (*Invitation, *Reply, error) {
	return c.invitation(ctx, http.MethodDelete, "/api/invitations/"+url.PathEscape(id), nil, nil)
}

// ResendInvitation mints a new link (and mails it when the invitation is
// mailed); the previous link stops working.
func (c *Client) ResendInvitation(ctx context.Context, id string) (*Invitation, *Reply, error) {
	return c.invitation(ctx, http.MethodPost, "/api/invitations/"+url.PathEscape(id)+"/resend", nil, nil)
}

// ListQuery filters GET /api/invitations; zero values do not filter.
type ListQuery struct {
	Status       grants.Status
	Email        string
	ExternalID   string
	ClientID     string
	UnsafeClaims bool
	// EmailPrefix (any case) and ExternalIDPrefix (as given) search by
	// prefix; the list then comes by email or external ID, not newest first.
	EmailPrefix, ExternalIDPrefix string
	// CreatedSince and CreatedUntil (exclusive) bound the creation time.
	CreatedSince, CreatedUntil time.Time
	Limit                      int // 1..1000; 0: the server's default (50)
	Cursor                     string
}

func (q ListQuery) values() url.Values {
	v := url.Values{}
	if q.Limit != 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	for k, s := range map[string]string{"status": string(q.Status), "email": q.Email, "external_id": q.ExternalID, "client_id": q.ClientID, "cursor": q.Cursor} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if q.UnsafeClaims {
		v.Set("unsafe_claims", "true")
	}
	for k, s := range map[string]string{"email_prefix": q.EmailPrefix, "external_id_prefix": q.ExternalIDPrefix} {
		if s != "" {
			v.Set(k, s)
		}
	}
	for k, t := range map[string]time.Time{"created_since": q.CreatedSince, "created_until": q.CreatedUntil} {
		if !t.IsZero() {
			v.Set(k, t.Format(time.RFC3339Nano))
		}
	}
	return v
}

// ListInvitations reads one page of invitations.
func (c *Client) ListInvitations(ctx context.Context, q ListQuery) (*InvitationList, *Reply, error) {
	rep, err := c.Do(ctx, http.MethodGet, "/api/invitations?"+q.values().Encode(), nil, nil)
	if err != nil {
		return nil, nil, err
	}
	var list InvitationList
	if err := decode(rep, &list); err != nil {
		return nil, rep, err
	}
	return &list, rep, nil
}

// Backup writes a consistent snapshot of usher's store (GET
// /api/store/backup; the token needs ScopeStoreBackup) to w as it arrives,
// and returns how many bytes it wrote. The snapshot is a bbolt database
// file, taken while usher runs. An answer cut off half way is an error: the
// bytes written so far are not a backup. A 4xx or 5xx is a *Problem (501:
// usher runs on Redis, which has no online backup). c.HTTP's Timeout, when
// set, bounds the whole download.
func (c *Client) Backup(ctx context.Context, w io.Writer) (int64, error) {
	const path = "/api/store/backup"
	for attempt := 0; ; attempt++ {
		tok, err := c.Token(ctx)
		if err != nil {
			return 0, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base()+path, nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Accept", "application/octet-stream, application/problem+json")
		resp, err := c.httpClient().Do(req)
		if err != nil {
			return 0, c.unreachable(err)
		}
		if resp.StatusCode == http.StatusUnauthorized && attempt == 0 {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			c.accessToken = "" // expired: get a new one, once
			continue
		}
		if resp.StatusCode >= 400 {
			raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			return 0, newProblem(resp, raw)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "application/octet-stream") {
			return 0, fmt.Errorf("usher answered %s (%s) to GET %s instead of a backup; is the issuer URL usher's?", resp.Status, ct, path)
		}
		n, err := io.Copy(w, resp.Body)
		if err != nil {
			return n, fmt.Errorf("the backup broke off after %d bytes: %w", n, err)
		}
		if resp.ContentLength >= 0 && n != resp.ContentLength {
			return n, fmt.Errorf("the backup broke off after %d of %d bytes", n, resp.ContentLength)
		}
		return n, nil
	}
}
