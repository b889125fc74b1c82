package broker

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/usher-oidc/usher/broker/upstream"
	"github.com/usher-oidc/usher/grants"
)

// RedemptionHook is an optional synchronous call before a redemption
// commits: the answer allows it, denies it with a reason shown to the
// person, or adds/overrides claims.
type RedemptionHook struct {
	URL     string
	Timeout time.Duration // default 3s
	// FailOpen: when the hook cannot be reached or answers nonsense, redeem
	// anyway (without extra claims). Otherwise refuse.
	FailOpen bool
	// Secret signs each call: header Usher-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">.
	Secret []byte
	Client *http.Client
}

// hookClient does not follow redirects: the signed body would go to a URL
// nobody configured, and a 3xx is not an answer (see the status check).
var hookClient = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

type hookRequest struct {
	Invitation hookInvitation `json:"invitation"`
	User       hookUser       `json:"user"`
	Identity   hookIdentity   `json:"identity"`
}

type hookInvitation struct {
	ID         string         `json:"id"`
	Email      string         `json:"email"`
	Roles      []string       `json:"roles"`
	Claims     map[string]any `json:"claims"`
	Metadata   map[string]any `json:"metadata"`
	ExternalID string         `json:"external_id,omitempty"`
	ClientID   string         `json:"client_id,omitempty"`
}

type hookUser struct {
	ID  string `json:"id"`
	New bool   `json:"new"`
}

type hookIdentity struct {
	Issuer        string `json:"issuer"`
	Subject       string `json:"subject"`
	Connection    string `json:"connection,omitempty"`
	Email         string `json:"email,omitempty"`
	EmailVerified bool   `json:"email_verified"`
}

type hookResponse struct {
	Allow  *bool          `json:"allow"`
	Reason string         `json:"reason"`
	Claims map[string]any `json:"claims"`
}

// approver returns the Approve function of a redemption, or nil without a hook.
func (b *Broker) approver(userID string, created bool, id *upstream.Identity) func(context.Context, *grants.Invitation) (map[string]any, error) {
	h := b.opts.RedemptionHook
	if h == nil || h.URL == "" {
		return nil
	}
	return func(ctx context.Context, inv *grants.Invitation) (map[string]any, error) {
		claims, err := b.callHook(ctx, h, hookRequest{
			Invitation: hookInvitation{ID: inv.ID, Email: inv.Email, Roles: inv.Roles, Claims: inv.Claims, Metadata: inv.Metadata,
				ExternalID: inv.ExternalID, ClientID: inv.ClientID},
			User:     hookUser{ID: userID, New: created},
			Identity: hookIdentity{Issuer: id.Issuer, Subject: id.Subject, Connection: id.Connection, Email: id.Email, EmailVerified: id.EmailVerified},
		})
		var denied *grants.DeniedError
		if err == nil || errors.As(err, &denied) {
			return claims, err
		}
		b.log.WarnContext(ctx, "redemption hook failed", "invitation_id", inv.ID, "fail_open", h.FailOpen, "err", err)
		if h.FailOpen {
			return nil, nil
		}
		return nil, &grants.DeniedError{Reason: "the invitation could not be checked right now; try again in a few minutes"}
	}
}

func (b *Broker) callHook(ctx context.Context, h *RedemptionHook, req hookRequest) (map[string]any, error) {
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/json")
	if len(h.Secret) > 0 {
		ts := strconv.FormatInt(b.now().Unix(), 10)
		mac := hmac.New(sha256.New, h.Secret)
		mac.Write([]byte(ts + "."))
		mac.Write(body)
		hr.Header.Set("Usher-Signature", "t="+ts+",v1="+hex.EncodeToString(mac.Sum(nil)))
	}
	client := h.Client
	if client == nil {
		client = hookClient
	}
	resp, err := client.Do(hr)
	if err != nil {
		return nil, fmt.Errorf("calling the redemption hook: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("redemption hook answered %d", resp.StatusCode)
	}
	var out hookResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&out); err != nil || out.Allow == nil {
		return nil, errors.New("redemption hook answered without a boolean \"allow\"")
	}
	if !*out.Allow {
		reason := clip(out.Reason, 300)
		if reason == "" {
			reason = "this invitation cannot be used for this account"
		}
		return nil, &grants.DeniedError{Reason: reason}
	}
	// The hook may not forge identity either: a name the claim-name rule
	// refuses is dropped (the rest of the answer stands) and logged.
	for k := range out.Claims {
		if err := grants.ValidateClaimName(b.opts.ClaimsNamespace, k); err != nil {
			delete(out.Claims, k)
			b.log.WarnContext(ctx, "redemption hook returned a claim usher refuses; dropped", "invitation_id", req.Invitation.ID, "err", err)
		}
	}
	return out.Claims, nil
}
