// Package e2e drives usher end to end: a real Chromium (chromedp) against
// usher, the devidp stand-in for Auth0 and the demo SPA, all on loopback.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/internal/testkit"
)

func startDev(t testing.TB, opts app.DevOptions) *app.Dev {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(newTestWriter(t), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	d, err := app.StartDev(context.Background(), opts)
	if err != nil {
		t.Fatalf("starting usher dev: %v", err)
	}
	t.Cleanup(d.Close)
	return d
}

// testWriter collects what background goroutines log and hands it to the
// test log from the test's own goroutine, at its end: a t.Log from another
// goroutine while the test finishes is a data race in package testing.
type testWriter struct {
	mu  sync.Mutex
	buf []string
}

// newTestWriter flushes into t's log after every cleanup registered later
// (cleanups run last-in first-out), i.e. once usher has stopped.
func newTestWriter(t testing.TB) *testWriter {
	w := &testWriter{}
	t.Cleanup(func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, line := range w.buf {
			t.Log(line)
		}
		w.buf = nil
	})
	return w
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.buf = append(w.buf, strings.TrimRight(string(p), "\n"))
	w.mu.Unlock()
	return len(p), nil
}

// newBrowser starts a fresh headless Chromium with its own profile.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (make test installs it): %v", err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-quic", true),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	// Start the browser on this context: chromedp ties the browser's life to
	// the context of the first action, and later steps use shorter ones.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() {
		cancelTimeout()
		cancelCtx()
		cancelAlloc()
	})
	return ctx
}

// demoState is what the demo SPA exposes to tests after each render.
type demoState struct {
	IDClaims     map[string]any `json:"idClaims"`
	ATClaims     any            `json:"atClaims"`
	Userinfo     map[string]any `json:"userinfo"`
	RefreshToken bool           `json:"refreshToken"`
}

// waitSignedIn waits until the SPA shows a signed-in state and returns it.
func waitSignedIn(t *testing.T, ctx context.Context) demoState {
	t.Helper()
	raw := pollJS(t, ctx, "waiting for the SPA to be signed in", 30*time.Second,
		`document.body && document.body.dataset.ready === "1" && window.demoState && window.demoState.idClaims && window.demoState.userinfo ? JSON.stringify(window.demoState) : ""`)
	var s demoState
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		t.Fatalf("decoding demo state: %v", err)
	}
	return s
}

// pollJS evaluates expr until it is truthy, across page navigations (a poll
// in a page that navigates away fails; the next one runs in the new page).
func pollJS(t *testing.T, ctx context.Context, what string, timeout time.Duration, expr string) string {
	t.Helper()
	var last error
	var got string
	if testkit.Within(timeout, func() bool {
		v, err := chromedp.Run(ctx, chromedp.Evaluate[any](expr))
		if err != nil {
			last = err
			return false
		}
		switch x := v.(type) {
		case string:
			got = x
		case bool:
			if x {
				got = "true"
			}
		}
		return got != ""
	}) {
		return got
	}
	failWithPage(t, ctx, what, fmt.Errorf("timed out after %s (last error: %v)", timeout, last))
	return ""
}

// failWithPage reports where the browser is and what it shows, and saves a screenshot.
func failWithPage(t *testing.T, ctx context.Context, what string, err error) {
	t.Helper()
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText.slice(0, 2000) : ""`))
	if png, serr := chromedp.Run(ctx, chromedp.FullScreenshot(100)); serr == nil {
		p := filepath.Join(t.ArtifactDir(), "failure.png")
		if os.WriteFile(p, png, 0o644) == nil {
			t.Logf("screenshot: %s", p)
		}
	}
	t.Fatalf("%s: %v\nlocation: %s\npage text:\n%s", what, err, loc, text)
}

func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	// A step that cannot happen fails in 30 s, leaving time to report the page.
	stepCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(stepCtx, steps...); err != nil {
		failWithPage(t, ctx, what, err)
	}
}

// fillAndSubmit sets the fields of the form formSel (name → value) and
// presses its submit button, once it is visible, in one script: node IDs
// looked up step by step (chromedp.SetValue, Click) can go stale when the
// page is replaced between the steps under load ("No node with given id").
func fillAndSubmit(t *testing.T, ctx context.Context, what, formSel string, fields map[string]string) {
	t.Helper()
	js, err := json.Marshal(struct {
		Form   string            `json:"form"`
		Fields map[string]string `json:"fields"`
	}{formSel, fields})
	if err != nil {
		t.Fatal(err)
	}
	do(t, ctx, what,
		chromedp.WaitVisible(chromedp.CSS(formSel)),
		chromedp.Evaluate[chromedp.Void](`(() => {
			const a = `+string(js)+`;
			const f = document.querySelector(a.form);
			for (const [name, value] of Object.entries(a.fields)) f.querySelector('[name="' + name + '"]').value = value;
			f.querySelector('button[type=submit]').click();
		})()`))
}

// devidp form helpers.
func signUpAtDevIDP(t *testing.T, ctx context.Context, email, password, name string) {
	t.Helper()
	fillAndSubmit(t, ctx, "filling the devidp sign-up form", `form[action="/u/signup"]`,
		map[string]string{"email": email, "password": password, "name": name})
}

func signInAtDevIDP(t *testing.T, ctx context.Context, email, password string) {
	t.Helper()
	fillAndSubmit(t, ctx, "filling the devidp login form", `form[action="/u/login"]`,
		map[string]string{"email": email, "password": password})
}

func claimString(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

// acceptInBrowser waits for usher's accept page, checks that it names the
// app and the invited email, and presses Accept.
func acceptInBrowser(t *testing.T, ctx context.Context, app, invited string) {
	t.Helper()
	pollJS(t, ctx, "waiting for usher's accept page", 20*time.Second, `!!document.querySelector('form[action="/accept"] #accept')`)
	title := pollJS(t, ctx, "reading the accept page", 5*time.Second, `document.querySelector('#title').textContent`)
	invitedText := pollJS(t, ctx, "reading the accept page", 5*time.Second, `document.querySelector('#invited').textContent`)
	if !strings.Contains(title, app) || !strings.Contains(invitedText, invited) {
		t.Errorf("accept page: title %q, invited %q; want %q and %q", title, invitedText, app, invited)
	}
	do(t, ctx, "pressing Accept", chromedp.Click(chromedp.CSS(`#accept`)))
}
