package broker

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/usher-oidc/usher/sessions"
	boltstore "github.com/usher-oidc/usher/store/bolt"
)

// A sealed code opens only with usher's key, for its purpose, before its
// expiry; it names its request, epoch and expiry, and its spend is keyed by
// the request, whatever text the code is presented in.
func TestOpenSealedCode(t *testing.T) {
	secret := []byte("01234567890123456789012345678901")
	now := time.Now()
	b := &Broker{codeSeal: newCodeSeal(secret, time.Minute), now: func() time.Time { return now }, opts: Options{}}
	b.opts.Tokens.Code = time.Minute
	ar := &sessions.AuthRequest{ID: "ar-1", ClientID: "spa", Done: true, Subject: "usr_1", State: "client state"}
	seal := func(b *Broker, epoch string) string {
		b.codeSeal.epoch = epoch
		c := sealCryptoFor(t, b, ar)
		code, err := c.Encrypt(ar.ID)
		if err != nil {
			t.Fatal(err)
		}
		return code
	}
	code := seal(b, "epoch-1")
	got, sp, err := b.openSealedCode(code)
	if err != nil || got.ID != "ar-1" || got.Subject != "usr_1" || got.State != "" || sp.Epoch != "epoch-1" ||
		sp.Hash != sealedSpendKey("ar-1") || !sp.ExpiresAt.Equal(now.Add(time.Minute).Truncate(time.Millisecond)) {
		t.Fatalf("open: %+v %+v %v", got, sp, err)
	}
	// The same code written otherwise opens to the same spend.
	if _, again, err := b.openSealedCode(code[:20] + "\r\n" + code[20:]); err != nil || again.Hash != sp.Hash {
		t.Fatalf("the code with a line break: %+v %v, want the spend %s", again, err, sp.Hash)
	}
	other := &Broker{codeSeal: newCodeSeal([]byte("another secret, 32 bytes or more"), time.Minute), now: b.now, opts: b.opts}
	altered := []byte(code)
	altered[len(altered)/2] ^= 1
	cookieLike, _ := b.codeSeal.codec.Encode("usher session", []byte(`{"e":"epoch-1","x":99999999999999,"r":{"i":"ar-1","u":"usr_1"}}`))
	for name, c := range map[string]string{
		"another key's code":                seal(other, "epoch-1"),
		"an altered code":                   string(altered),
		"a value sealed for something else": sealedCodePrefix + cookieLike,
		"not a code":                        sealedCodePrefix + "usr_1",
	} {
		if _, _, err := b.openSealedCode(c); err == nil {
			t.Errorf("%s opened", name)
		}
	}
	now = now.Add(time.Minute)
	if _, _, err := b.openSealedCode(code); err == nil {
		t.Error("an expired code opened")
	}
}

// sealCryptoFor is the Crypto sealing would return for ar, without the
// checks that need a request context and a store.
func sealCryptoFor(t *testing.T, b *Broker, ar *sessions.AuthRequest) sealCrypto {
	t.Helper()
	c, err := b.sealCrypto(ar, b.codeSeal.epoch)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A replica rereads the store's epoch a minute after it read it, so one
// that only issues codes stops issuing codes of a lost epoch within that
// minute; before, it keeps the one it read (no store trip per code).
func TestCodeEpochReread(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usher.db")
	open := func() *boltstore.Store {
		st, err := boltstore.Open(path, boltstore.Options{SweepInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}
	now := time.Now()
	b := &Broker{codeSeal: newCodeSeal([]byte("01234567890123456789012345678901"), time.Minute),
		now: func() time.Time { return now }, sessions: open()}
	first, err := b.currentEpoch(t.Context())
	if err != nil || first == "" {
		t.Fatalf("epoch %q, %v", first, err)
	}
	// The flow file lost, as after a crash: the store's epoch changes.
	if err := b.sessions.(*boltstore.Store).Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path + ".flow.clean"); err != nil {
		t.Fatal(err)
	}
	b.sessions = open()
	now = now.Add(time.Minute - time.Second)
	if got, _ := b.currentEpoch(t.Context()); got != first {
		t.Fatalf("within the minute: epoch %q, want the one read (%q)", got, first)
	}
	now = now.Add(time.Second)
	if got, _ := b.currentEpoch(t.Context()); got == first || got == "" {
		t.Fatalf("after the minute: epoch %q, want the store's new one", got)
	}
}

// A sealed code carries every field of the request its exchange reads and
// none of those only /authorize reads. Every field of sessions.AuthRequest
// is set, sealed and read back: a field added to AuthRequest fails this
// until it is either carried or listed as left out.
func TestSealedRequest(t *testing.T) {
	leftOut := map[string]bool{"State": true, "Prompt": true, "MaxAge": true, "LoginHint": true, "UILocales": true,
		"Connection": true, "ScreenHint": true, "InvitationHash": true, "Organization": true, "UpstreamInvitation": true, "Purpose": true}
	var ar sessions.AuthRequest
	v := reflect.ValueOf(&ar).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Interface().(type) {
		case string:
			f.SetString("x-" + v.Type().Field(i).Name)
		case []string:
			f.Set(reflect.ValueOf([]string{"a", v.Type().Field(i).Name}))
		case time.Time:
			f.Set(reflect.ValueOf(time.Unix(1_800_000_000, int64(i)).UTC()))
		case bool:
			f.SetBool(true)
		case *uint:
			n := uint(7)
			f.Set(reflect.ValueOf(&n))
		case *sessions.Upstream:
			f.Set(reflect.ValueOf(&sessions.Upstream{Subject: "auth0|1", Claims: map[string]any{"org_id": "org_1"}}))
		default:
			t.Fatalf("AuthRequest.%s: a type this test does not fill (%s)", v.Type().Field(i).Name, f.Type())
		}
	}
	got := reflect.ValueOf(sealRequest(&ar).authRequest()).Elem()
	for i := range v.NumField() {
		name := v.Type().Field(i).Name
		want := v.Field(i).Interface()
		if leftOut[name] {
			want = reflect.Zero(v.Field(i).Type()).Interface()
		}
		if !reflect.DeepEqual(got.Field(i).Interface(), want) {
			t.Errorf("%s: carried %v, want %v", name, got.Field(i).Interface(), want)
		}
	}
}
