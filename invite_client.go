package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// adminClient calls usher's admin API with a client_credentials token.
type adminClient struct {
	base         string // the issuer, without a trailing slash
	clientID     string
	clientSecret string
	scope        string
	http         *http.Client
	accessToken  string
}

// reply is an API answer with a 2xx status.
type reply struct {
	status   int
	body     []byte
	replayed bool // Idempotent-Replayed: the first answer to this Idempotency-Key
}

// token returns an access token, asking usher's token endpoint the first time.
func (a *adminClient) token(ctx context.Context) (string, error) {
	if a.accessToken != "" {
		return a.accessToken, nil
	}
	endpoint := a.base + "/oauth/token"
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {a.scope}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	// RFC 6749 §2.3.1: the credentials are form-encoded before Basic encoding.
	req.SetBasicAuth(url.QueryEscape(a.clientID), url.QueryEscape(a.clientSecret))
	resp, err := a.http.Do(req)
	if err != nil {
		return "", a.unreachable(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var tr struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	jsonErr := json.Unmarshal(raw, &tr)
	switch {
	case resp.StatusCode == http.StatusOK && tr.AccessToken != "":
		a.accessToken = tr.AccessToken
		return tr.AccessToken, nil
	case tr.Error == "invalid_client" || (tr.Error == "" && resp.StatusCode == http.StatusUnauthorized) ||
		strings.Contains(strings.ToLower(tr.Description), "client credentials"): // some servers answer server_error
		return "", fmt.Errorf("usher refused the client credentials of %q (%s): check --client-id and --client-secret (or USHER_CLIENT_ID and USHER_CLIENT_SECRET)",
			a.clientID, joinNonEmpty(": ", tr.Error, tr.Description))
	case tr.Error == "unauthorized_client" || tr.Error == "invalid_scope":
		return "", fmt.Errorf("client %q may not manage invitations (%s): in usher's config, allow it the client_credentials grant and the scope %s",
			a.clientID, joinNonEmpty(": ", tr.Error, tr.Description), a.scope)
	case tr.Error != "":
		return "", fmt.Errorf("getting an access token from %s failed: %s", endpoint, joinNonEmpty(": ", tr.Error, tr.Description))
	case jsonErr != nil:
		return "", fmt.Errorf("%s answered %s with something that is not a token response; is --issuer (%s) usher's issuer URL?", endpoint, resp.Status, a.base)
	}
	return "", fmt.Errorf("%s answered %s without an access token", endpoint, resp.Status)
}

// do calls the API. body, when not nil, is sent as JSON. A 4xx/5xx answer
// is returned as a *problemError.
func (a *adminClient) do(ctx context.Context, method, path string, body any, hdr http.Header) (*reply, error) {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return nil, err
		}
	}
	for attempt := 0; ; attempt++ {
		tok, err := a.token(ctx)
		if err != nil {
			return nil, err
		}
		var rd io.Reader
		if payload != nil {
			rd = bytes.NewReader(payload)
		}
		req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
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
		resp, err := a.http.Do(req)
		if err != nil {
			return nil, a.unreachable(err)
		}
		raw, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("reading usher's answer to %s %s: %v", method, path, err)
		}
		if resp.StatusCode == http.StatusUnauthorized && attempt == 0 {
			a.accessToken = "" // expired during a long import: get a new one, once
			continue
		}
		if resp.StatusCode >= 400 {
			return nil, newProblemError(resp, raw)
		}
		return &reply{status: resp.StatusCode, body: raw, replayed: resp.Header.Get("Idempotent-Replayed") == "true"}, nil
	}
}

// unreachable says which setting chose the address: the default issuer is
// only right for `usher dev` on its default ports.
func (a *adminClient) unreachable(err error) error {
	return fmt.Errorf("cannot reach usher at %s (set --issuer or USHER_ISSUER to usher's issuer URL; default %s): %w",
		a.base, defaultIssuer, unwrapURLError(err))
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func joinNonEmpty(sep string, parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, sep)
}

// problemError is an RFC 9457 problem the API answered.
type problemError struct {
	Status int    `json:"status"`
	Type   string `json:"type"`
	Title  string `json:"title"`
	Detail string `json:"detail"`
	Errors []struct {
		Field   string `json:"field"`
		Message string `json:"message"`
	} `json:"errors"`
}

func newProblemError(resp *http.Response, raw []byte) *problemError {
	p := &problemError{}
	if json.Unmarshal(raw, p) != nil || p.Title == "" {
		// Not a problem document (a proxy's error page, say): show what came.
		p = &problemError{Title: http.StatusText(resp.StatusCode)}
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

func (p *problemError) slug() string {
	return p.Type[strings.LastIndexByte(p.Type, '/')+1:]
}

// Error is the title, the detail, then one line per field error.
func (p *problemError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (HTTP %d)", p.Title, p.Status)
	if p.Detail != "" {
		b.WriteString(": " + p.Detail)
	}
	for _, e := range p.Errors {
		fmt.Fprintf(&b, "\n  %s: %s", e.Field, e.Message)
	}
	return b.String()
}

// oneLine is the problem for a per-row report: the field errors when there
// are any (they say what to fix), else the title and detail.
func (p *problemError) oneLine() string {
	if len(p.Errors) == 0 {
		return joinNonEmpty(": ", p.Title, p.Detail)
	}
	parts := make([]string, 0, len(p.Errors))
	for _, e := range p.Errors {
		parts = append(parts, e.Field+": "+e.Message)
	}
	return strings.Join(parts, "; ")
}

// invitationAnswer prints the API's answer as JSON under --json (and returns
// nil, nil), or decodes it for the human-readable output.
func (c *inviteCmd) invitationAnswer(rep *reply) (*invitationJSON, error) {
	if c.jsonOut {
		return nil, c.printJSON(rep.body)
	}
	var inv invitationJSON
	if err := json.Unmarshal(rep.body, &inv); err != nil {
		return nil, fmt.Errorf("unreadable answer from usher: %v", err)
	}
	return &inv, nil
}
