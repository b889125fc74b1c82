package sessions

import (
	"context"
	"fmt"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/store/errs"
)

// Together is a few independent operations on different records that one
// step of a sign-in needs at once: an auth request's creation, a browser
// session's save, a code's save, an auth request's deletion, a browser
// session's and an auth
// request's read (or take of a login state with its auth request). A backend that
// can sends them in one round trip (Batcher); RunTogether runs them one
// after the other elsewhere. None sees another's effect, so they must
// name different records.
type Together struct {
	// CreateAuthRequest is created as CreateAuthRequest creates it.
	CreateAuthRequest *AuthRequest
	// SaveLoginState is saved as SaveLoginState saves it (nil for none),
	// after CreateAuthRequest: a sign-in's request and the state of the
	// upstream sign-in it starts, in one round trip. A store that keeps no
	// login states refuses the whole with errors.ErrUnsupported before
	// writing anything.
	SaveLoginState *LoginStateSave
	// SaveSession is saved as SaveBrowserSession saves it, or, with
	// ReplacesSession, as ReplaceBrowserSession replaces that session.
	SaveSession     *BrowserSession
	ReplacesSession string
	// SaveCode is saved as SaveCode saves it.
	SaveCode *Code
	// DeleteAuthRequest names an auth request to delete as
	// DeleteAuthRequest deletes it ("" for none): a stored request its
	// sealed code answered, which nothing reads again.
	DeleteAuthRequest string
	// GetSession and GetAuthRequest name the records to read ("" for none).
	GetSession     string
	GetAuthRequest string
	// TakeLoginState: the auth request and login state to take, as
	// Store.TakeLoginState takes them (nil for none). Not with GetAuthRequest.
	TakeLoginState *LoginStateKey
	// EndTakenRequest: when the take finds its state, the auth request is
	// deleted with it (the upstream answered with an error, which ends the
	// request); a request whose state is not found stays. Only with
	// TakeLoginState.
	EndTakenRequest bool
	// GetUserAndGrant names a user to read with its grant, as
	// grants.UserGrantReader reads them, where that costs no round trip of
	// its own: a Batcher reads it in its round trip, RunApart does not
	// (Read.UserGrant stays nil and the caller reads the user itself).
	GetUserAndGrant string
}

// LoginStateKey names a login state: its auth request and its key.
type LoginStateKey struct{ AuthRequestID, Key string }

// LoginStateSave is a login state to keep under its key.
type LoginStateSave struct {
	LoginStateKey
	State *LoginState
}

// Check refuses, with errs.ErrInvalid, a Together whose operations clash:
// a take answers with the auth request, so a read of it too would be a
// second answer for the same field of Read.
func (t Together) Check() error {
	if t.TakeLoginState != nil && t.GetAuthRequest != "" {
		return fmt.Errorf("together: a login state's take with an auth request's read: %w", errs.ErrInvalid)
	}
	if t.EndTakenRequest && t.TakeLoginState == nil {
		return fmt.Errorf("together: an auth request ended with no take: %w", errs.ErrInvalid)
	}
	return nil
}

// Read is what a Together read: each record with the error its own Get
// would have returned (ErrNotFound for an absent one). A take's auth
// request and error go in AuthRequest and AuthRequestErr, as
// TakeLoginState returns them (the request with ErrNotFound when it
// holds no such state), its login state in LoginState.
type Read struct {
	Session        *BrowserSession
	SessionErr     error
	AuthRequest    *AuthRequest
	AuthRequestErr error
	LoginState     *LoginState
	// UserGrant is GetUserAndGrant's answer; nil when it was not read.
	UserGrant *grants.UserGrant
}

// Batcher is a Store that runs a Together in one round trip. Its error is
// the first write's failure (the other operations may have been done or
// not); the reads' errors are in Read.
type Batcher interface {
	RunTogether(ctx context.Context, t Together) (Read, error)
}

// RunTogether runs t through st: in one round trip where st is a Batcher,
// else as RunApart.
func RunTogether(ctx context.Context, st Store, t Together) (Read, error) {
	if b, ok := st.(Batcher); ok {
		return b.RunTogether(ctx, t)
	}
	return RunApart(ctx, st, t)
}

// RunApart runs t's operations one by one: the writes (the auth request's
// creation, its login state, the session's, the code's, stopping at a
// failure: what ran before it stays), then the reads.
func RunApart(ctx context.Context, st Store, t Together) (Read, error) {
	if err := t.Check(); err != nil {
		return Read{}, err
	}
	if err := t.write(ctx, st); err != nil {
		return Read{}, err
	}
	var r Read
	if t.GetSession != "" {
		r.Session, r.SessionErr = st.GetBrowserSession(ctx, t.GetSession)
	}
	if t.GetAuthRequest != "" {
		r.AuthRequest, r.AuthRequestErr = st.GetAuthRequest(ctx, t.GetAuthRequest)
	}
	if k := t.TakeLoginState; k != nil {
		r.AuthRequest, r.LoginState, r.AuthRequestErr = st.TakeLoginState(ctx, k.AuthRequestID, k.Key)
		if t.EndTakenRequest && r.LoginState != nil && r.AuthRequestErr == nil {
			if err := st.DeleteAuthRequest(ctx, k.AuthRequestID); err != nil {
				return Read{}, err
			}
		}
	}
	return r, nil
}

func (t Together) write(ctx context.Context, st Store) error {
	if t.CreateAuthRequest != nil {
		if err := st.CreateAuthRequest(ctx, t.CreateAuthRequest); err != nil {
			return err
		}
	}
	if ls := t.SaveLoginState; ls != nil {
		if err := st.SaveLoginState(ctx, ls.AuthRequestID, ls.Key, ls.State); err != nil {
			return err
		}
	}
	var err error
	switch {
	case t.SaveSession != nil && t.ReplacesSession != "":
		err = st.ReplaceBrowserSession(ctx, t.SaveSession, t.ReplacesSession)
	case t.SaveSession != nil:
		err = st.SaveBrowserSession(ctx, t.SaveSession)
	}
	if err == nil && t.SaveCode != nil {
		err = st.SaveCode(ctx, t.SaveCode)
	}
	if err == nil && t.DeleteAuthRequest != "" {
		err = st.DeleteAuthRequest(ctx, t.DeleteAuthRequest)
	}
	return err
}
