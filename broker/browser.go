package broker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/securecookie"
	gsessions "github.com/gorilla/sessions"

	"github.com/usher-oidc/usher/sessions"
)

// browserStore is a gorilla/sessions Store that keeps every value server-side
// in sessions.Store; the cookie carries only the session ID, signed and
// encrypted with securecookie. Sessions expire after an idle period and,
// whatever the activity, after an absolute lifetime.
type browserStore struct {
	st       sessions.Store
	codec    securecookie.Codec
	options  gsessions.Options
	idle     time.Duration
	absolute time.Duration
	now      func() time.Time
}

var _ gsessions.Store = (*browserStore)(nil)

func newBrowserStore(st sessions.Store, secret []byte, secure bool, idle, absolute time.Duration, now func() time.Time) *browserStore {
	// Derive separate hash and block keys so one secret configures both.
	hashKey := deriveKey(secret, "usher session cookie hmac")
	blockKey := deriveKey(secret, "usher session cookie aes")
	codec := securecookie.New(hashKey, blockKey)
	codec.MaxAge(int(absolute.Seconds()))
	return &browserStore{
		st:    st,
		codec: codec,
		options: gsessions.Options{
			Path:     "/",
			MaxAge:   int(absolute.Seconds()),
			Secure:   secure,
			HttpOnly: true,
			SameSite: http.SameSiteLaxMode,
		},
		idle: idle, absolute: absolute, now: now,
	}
}

func (s *browserStore) Get(r *http.Request, name string) (*gsessions.Session, error) {
	return gsessions.GetRegistry(r).Get(s, name)
}

// New loads the session named by the cookie, or starts an empty one. A bad,
// expired or unknown cookie is not an error for the caller: it just gets a
// fresh session. A read made already in this request (preloadSession) is
// used instead of reading again.
func (s *browserStore) New(r *http.Request, name string) (*gsessions.Session, error) {
	sess := gsessions.NewSession(s, name)
	opts := s.options
	sess.Options = &opts
	sess.IsNew = true
	c, err := r.Cookie(name)
	if err != nil {
		return sess, nil
	}
	var id string
	var rec *sessions.BrowserSession
	if pre, _ := r.Context().Value(ctxPreloadedSession{}).(*preloadedSession); pre != nil && pre.cookie == c.Value {
		id, rec, err = pre.id, pre.rec, pre.err
	} else if s.codec.Decode(name, c.Value, &id) != nil {
		return sess, nil
	} else {
		rec, err = s.st.GetBrowserSession(r.Context(), id)
	}
	if errors.Is(err, sessions.ErrNotFound) {
		return sess, nil
	}
	if err != nil {
		return sess, fmt.Errorf("loading browser session: %w", err)
	}
	now := s.now()
	if now.After(rec.CreatedAt.Add(s.absolute)) {
		_ = s.st.DeleteBrowserSession(r.Context(), id)
		return sess, nil
	}
	sess.ID = id
	sess.IsNew = false
	for k, v := range rec.Values {
		sess.Values[k] = v
	}
	sess.Values[createdKey] = rec.CreatedAt.Format(time.RFC3339Nano)
	sess.Values[loadedKey] = rec
	return sess, nil
}

// ctxPreloadedSession carries a browser session read together with
// something else (preloadSession) to New.
type ctxPreloadedSession struct{}

type preloadedSession struct {
	cookie, id string
	rec        *sessions.BrowserSession
	err        error
}

// cookieSession is the session ID r's cookie names ("" for none or a bad
// cookie) and the cookie's value.
func (s *browserStore) cookieSession(r *http.Request, name string) (id, cookie string) {
	c, err := r.Cookie(name)
	if err != nil || s.codec.Decode(name, c.Value, &id) != nil {
		return "", ""
	}
	return id, c.Value
}

// preloadSession hands New the session the cookie value names, read
// already (rec, err as GetBrowserSession answered).
func preloadSession(r *http.Request, cookie, id string, rec *sessions.BrowserSession, err error) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), ctxPreloadedSession{}, &preloadedSession{cookie: cookie, id: id, rec: rec, err: err}))
}

// Save writes the session server-side and (re)sets the cookie. MaxAge < 0
// deletes it.
func (s *browserStore) Save(r *http.Request, w http.ResponseWriter, sess *gsessions.Session) error {
	return s.saveWith(r, w, sess, func(rec *sessions.BrowserSession, replaces string) error {
		return s.write(r.Context(), rec, replaces)
	})
}

// write stores rec, replacing the session replaces when that is set; a
// nil rec (a save skipped as unchanged) stores nothing.
func (s *browserStore) write(ctx context.Context, rec *sessions.BrowserSession, replaces string) error {
	if rec == nil {
		return nil
	}
	if replaces != "" {
		return s.st.ReplaceBrowserSession(ctx, rec, replaces)
	}
	return s.st.SaveBrowserSession(ctx, rec)
}

// saveWith is Save with the session's record handed to write, which stores
// it, maybe with other operations in the same round trip
// (sessions.RunTogether), or leaves it to a later write (sessionWrite).
func (s *browserStore) saveWith(r *http.Request, w http.ResponseWriter, sess *gsessions.Session, write func(rec *sessions.BrowserSession, replaces string) error) error {
	ctx := r.Context()
	replaces, _ := sess.Values[replacesKey].(string)
	if sess.Options.MaxAge < 0 {
		for _, id := range []string{sess.ID, replaces} {
			if id == "" {
				continue
			}
			if err := s.st.DeleteBrowserSession(ctx, id); err != nil && !errors.Is(err, sessions.ErrNotFound) {
				return fmt.Errorf("deleting browser session: %w", err)
			}
		}
		http.SetCookie(w, gsessions.NewCookie(sess.Name(), "", sess.Options))
		return nil
	}
	rec := s.record(sess)
	if s.unchanged(sess, rec) {
		// Nothing to store, and the cookie the browser holds names it:
		// write gets nil, so what rides with the save still runs.
		return write(nil, "")
	}
	if err := write(rec, replaces); err != nil {
		return fmt.Errorf("saving browser session: %w", err)
	}
	delete(sess.Values, replacesKey)
	encoded, err := s.codec.Encode(sess.Name(), sess.ID)
	if err != nil {
		return fmt.Errorf("encoding session cookie: %w", err)
	}
	http.SetCookie(w, gsessions.NewCookie(sess.Name(), encoded, sess.Options))
	return nil
}

// record is what the store keeps of sess (giving it an ID if it has none).
func (s *browserStore) record(sess *gsessions.Session) *sessions.BrowserSession {
	now := s.now()
	created := now
	if v, ok := sess.Values[createdKey].(string); ok {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			created = t
		}
	}
	if sess.ID == "" {
		sess.ID = newSessionID(sess)
	}
	rec := &sessions.BrowserSession{ID: sess.ID, Values: map[string]string{}, CreatedAt: created,
		ExpiresAt: minTime(now.Add(s.idle), created.Add(s.absolute))}
	for k, v := range sess.Values {
		ks, ok1 := k.(string)
		vs, ok2 := v.(string)
		if ok1 && ok2 && !strings.HasPrefix(ks, "\x00") {
			rec.Values[ks] = vs
		}
	}
	rec.Transient = onlySignInsInFlight(rec.Values)
	return rec
}

// newSessionID is a random session ID that, for a signed-in session, also
// names its user ("<random>.<user ID>"), as codes and refresh tokens name
// their subject: /authorize then reads the user and grant in the round
// trip that reads the session (sessionUserHint). A hint, never trusted:
// it is used only where the session's record names the same user. Older
// versions read such an ID as any other (they never look inside).
func newSessionID(sess *gsessions.Session) string {
	id := randomToken(32)
	if uid, _ := sess.Values["uid"].(string); uid != "" && !strings.Contains(uid, ".") {
		id += "." + uid
	}
	return id
}

// sessionUserHint is the user a session ID names ("" for none).
func sessionUserHint(id string) string {
	_, uid, _ := strings.Cut(id, ".")
	return uid
}

// touchInterval is how stale a session's stored idle expiry may be: a
// save (saveWith) that would change nothing but slide the expiry by less
// than this is skipped (unchanged), so a login answered from the session
// writes it at most once a minute, not every time (on bbolt, a durable
// commit each).
// The idle timeout is therefore kept to within this.
func (s *browserStore) touchInterval() time.Duration { return min(time.Minute, s.idle/10) }

// unchanged: rec, what saving sess now would store, holds the values sess
// was loaded with under the same ID, and the stored idle expiry is at most
// touchInterval older than rec's.
func (s *browserStore) unchanged(sess *gsessions.Session, rec *sessions.BrowserSession) bool {
	loaded, _ := sess.Values[loadedKey].(*sessions.BrowserSession)
	if loaded == nil || rec.ID != loaded.ID {
		return false
	}
	if _, renewing := sess.Values[replacesKey]; renewing {
		return false
	}
	return maps.Equal(rec.Values, loaded.Values) && !loaded.ExpiresAt.Before(rec.ExpiresAt.Add(-s.touchInterval()))
}

// sessionWrite is a session save left for the code's save to carry
// (completeAuthorization → SaveAuthCode): one round trip for both.
type sessionWrite struct {
	rec      *sessions.BrowserSession
	replaces string
	taken    bool // by SaveAuthCode: written, or failed with the code
}

type ctxSessionWrite struct{}

// onlySignInsInFlight: every value is an upstream sign-in's pending state
// (pendingPrefix), so losing the session in a crash loses only what the
// lost auth requests lose too (see sessions.BrowserSession.Transient).
func onlySignInsInFlight(values map[string]string) bool {
	for k := range values {
		if !strings.HasPrefix(k, pendingPrefix) {
			return false
		}
	}
	return true
}

// Values under keys starting with a NUL byte are the store's own
// bookkeeping, never saved as session values.
const (
	createdKey  = "\x00created"
	replacesKey = "\x00replaces" // the ID renew dropped, deleted by the next Save
	loadedKey   = "\x00loaded"   // the record New loaded (*sessions.BrowserSession)
)

// renew gives the session a new ID (after sign-in), so a session ID fixed
// before sign-in is worthless after it: the next Save stores the session
// under the new ID and deletes the old record in the same write (one round
// trip, one durable commit). Nothing signed in is ever saved under the old ID.
func (s *browserStore) renew(sess *gsessions.Session) {
	if sess.ID != "" {
		if _, pending := sess.Values[replacesKey]; !pending {
			sess.Values[replacesKey] = sess.ID
		}
	}
	sess.ID = ""
	delete(sess.Values, createdKey)
}
