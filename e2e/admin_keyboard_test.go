package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/internal/testkit"
)

// signInFirstAdmin bootstraps an admin through a provisioning invitation
// and signs the browser in to /admin.
func signInFirstAdmin(t *testing.T, ctx context.Context, d *app.Dev, email, password string) {
	t.Helper()
	boot := invite(t, d, provisionerToken(t, d), map[string]any{"email": email, "roles": []string{"usher:admin"}, "send_email": false})
	do(t, ctx, "following the admin invitation", chromedp.Navigate(boot["url"].(string)))
	signUpAtDevIDP(t, ctx, email, password, "Key Board")
	acceptInBrowser(t, ctx, "Demo SPA", email)
	waitSignedIn(t, ctx)
	signInToAdmin(t, ctx, d, email, password)
	pollJS(t, ctx, "waiting for the dashboard", 20*time.Second, `!!document.querySelector('#invite-form')`)
}

// The operator's screens at desktop (1280 px) and phone (390 px) width, in
// the test's artifacts: the dashboard and the funnel chart, each showing
// what it is for and not scrolling sideways.
func TestAdminScreenshots(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{Configure: withProvisioner})
	issuer := strings.TrimSuffix(d.IssuerURL, "/")
	shots := adminArtifactsDir(t)
	ctx := newBrowser(t)
	do(t, ctx, "sizing the window", viewport(1280, false))
	signInFirstAdmin(t, ctx, d, "shots-admin@example.com", "admin-password-1")
	for _, w := range screenWidths {
		do(t, ctx, "sizing the window", viewport(w.width, w.mobile))
		for _, p := range []struct{ path, ready, shot string }{
			{"/admin", `!!document.querySelector('#invite-form') && document.querySelectorAll('#invitation-list tbody tr').length > 0`, "dashboard"},
			{"/admin/funnel", `!!document.querySelector('svg#funnel-chart') && document.querySelector('svg#funnel-chart').getBoundingClientRect().width > 0`, "funnel"},
		} {
			do(t, ctx, "opening "+p.path, chromedp.Navigate(issuer+p.path))
			pollJS(t, ctx, "waiting for "+p.path+" at "+w.name, 20*time.Second, `document.readyState === "complete" && `+p.ready)
			// Against the width asked for: a mobile viewport widens to fit what overflows.
			if got := adminEval(t, ctx, `document.documentElement.scrollWidth + " " + `+fmt.Sprint(w.width)); !fitsWidth(got) {
				t.Errorf("%s at %s scrolls sideways: scrollWidth width = %s", p.path, w.name, got)
			}
			adminScreenshot(t, ctx, shots, "admin-"+p.shot+"-"+w.name+".png")
		}
	}
}

// consoleProblems records the page's errors: CSP violations, exceptions,
// console.error.
type consoleProblems struct {
	mu   sync.Mutex
	msgs []string
}

func (c *consoleProblems) listen(t *testing.T, ctx context.Context) {
	t.Helper()
	err := chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch e := ev.(type) {
		case *cdplog.EventEntryAdded:
			if strings.HasSuffix(e.Entry.URL, "/favicon.ico") {
				break // the browser asks for one; usher has none
			}
			if e.Entry.Level == cdplog.EntryLevelError || strings.Contains(e.Entry.Text, "Content Security Policy") {
				msg = string(e.Entry.Source) + ": " + e.Entry.Text + " " + e.Entry.URL
			}
		case *runtime.EventExceptionThrown:
			msg = "exception: " + e.ExceptionDetails.Text
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError {
				msg = "console.error"
			}
		}
		if msg != "" {
			c.mu.Lock()
			c.msgs = append(c.msgs, msg)
			c.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (c *consoleProblems) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.msgs
	c.msgs = nil
	return out
}

// The one-time link's Copy button: its nonce'd script runs under the
// admin CSP (which blocks any other inline script), and the link lands in
// the clipboard; the link is also selected for a manual copy.
func TestAdminCopyLink(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{Configure: withProvisioner})
	issuer := strings.TrimSuffix(d.IssuerURL, "/")
	ctx := newBrowser(t)
	do(t, ctx, "sizing the window", viewport(1280, false))
	signInFirstAdmin(t, ctx, d, "copy-admin@example.com", "admin-password-1")
	for _, perm := range []string{"clipboard-read", "clipboard-write"} {
		if _, err := chromedp.CallBrowser(ctx, browser.SetPermission, browser.SetPermissionParams{
			Permission: &browser.PermissionDescriptor{Name: perm}, Setting: browser.PermissionSettingGranted, Origin: issuer}); err != nil {
			t.Fatalf("granting %s: %v", perm, err)
		}
	}
	var problems consoleProblems
	problems.listen(t, ctx)

	fillInviteForm(t, ctx, "copied@example.com", "", "", "")
	do(t, ctx, "creating a link-only invitation", chromedp.Click(chromedp.CSS(`#create`)))
	link := pollJS(t, ctx, "waiting for the one-time link", 20*time.Second, `(document.querySelector('#invite-link') || {}).value || ""`)
	if got := adminEval(t, ctx, `(() => { const i = document.querySelector('#invite-link'); return i.value.substring(i.selectionStart, i.selectionEnd) })()`); got != link {
		t.Errorf("the link is not selected for a manual copy: selection %q", got)
	}
	do(t, ctx, "pressing Copy", chromedp.Click(chromedp.CSS(`#copy-link`)))
	pollJS(t, ctx, "waiting for the copy to be confirmed", 10*time.Second, `document.querySelector('#copy-status').textContent === "Copied."`)
	clip, err := chromedp.Run(ctx, chromedp.Evaluate[string](`navigator.clipboard.readText()`, chromedp.EvalAwaitPromise))
	if err != nil || clip != link {
		t.Errorf("clipboard = %q (%v), want the link %q", clip, err, link)
	}
	if p := problems.take(); len(p) > 0 {
		t.Errorf("errors on the page while copying: %q", p)
	}

	// The listener does see a CSP violation: an inline script without the
	// nonce is refused.
	do(t, ctx, "adding an inline script without nonce", chromedp.Evaluate[chromedp.Void](
		`(() => { const s = document.createElement('script'); s.textContent = 'window.injected = 1'; document.body.appendChild(s) })()`))
	if adminEval(t, ctx, `String(window.injected === 1)`) == "true" {
		t.Error("an inline script without the nonce ran")
	}
	testkit.Eventually(t, "the CSP violation to reach the listener", func() bool {
		for _, m := range problems.take() {
			if strings.Contains(m, "Content Security Policy") {
				return true
			}
		}
		return false
	})
}

// Every action of the invitation flow works from the keyboard alone, with
// the focus visible at each step: create a link-only invitation (Tab to the
// email, type it, pick the delivery with the arrow keys, Enter on Create),
// then revoke it (Enter opens the confirmation, Space confirms).
func TestAdminKeyboardOnly(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{Configure: withProvisioner})
	ctx := newBrowser(t)
	do(t, ctx, "sizing the window", viewport(1280, false))
	signInFirstAdmin(t, ctx, d, "keys-admin@example.com", "admin-password-1")
	do(t, ctx, "reloading the dashboard", chromedp.Reload())
	pollJS(t, ctx, "waiting for the dashboard", 20*time.Second, `document.readyState === "complete" && !!document.querySelector('#invite-form')`)

	tabTo(t, ctx, "email")
	do(t, ctx, "typing the email", chromedp.KeyEvent("keys-invitee@example.com"))
	tabTo(t, ctx, "delivery-email") // the radio group's checked choice takes the focus
	do(t, ctx, "choosing link-only with an arrow key", chromedp.KeyEvent(kb.ArrowDown))
	if got := adminEval(t, ctx, `document.activeElement.id + " " + document.querySelector('#delivery-link').checked`); got != "delivery-link true" {
		t.Fatalf("after ArrowDown: focus and link-only = %q", got)
	}
	checkFocusVisible(t, ctx, "delivery-link")
	tabTo(t, ctx, "create")
	do(t, ctx, "pressing Enter on Create", chromedp.KeyEvent(kb.Enter))
	link := pollJS(t, ctx, "waiting for the one-time link", 20*time.Second, `(document.querySelector('#invite-link') || {}).value || ""`)
	if !strings.Contains(link, "/invite/inv_") || adminText(t, ctx, `#inv-email`) != "keys-invitee@example.com" {
		t.Fatalf("created from the keyboard: link %q for %q", link, adminText(t, ctx, `#inv-email`))
	}

	tabTo(t, ctx, "copy-link")
	tabTo(t, ctx, "revoke")
	do(t, ctx, "pressing Enter on Revoke", chromedp.KeyEvent(kb.Enter))
	pollJS(t, ctx, "waiting for the revoke confirmation", 10*time.Second, `document.querySelector('#revoke').parentElement.open`)
	tabTo(t, ctx, "revoke-confirm")
	do(t, ctx, "pressing Space on Yes, revoke", chromedp.KeyEvent(" "))
	pollJS(t, ctx, "waiting for the revoked status", 20*time.Second, `(document.querySelector('#inv-status') || {}).textContent === "revoked"`)
}

// tabTo presses Tab until the element with id has the focus (at most 80
// times) and checks that the focus is visible there.
func tabTo(t *testing.T, ctx context.Context, id string) {
	t.Helper()
	for range 80 {
		do(t, ctx, "pressing Tab", chromedp.KeyEvent(kb.Tab))
		if adminEval(t, ctx, `document.activeElement ? document.activeElement.id : ""`) == id {
			checkFocusVisible(t, ctx, id)
			return
		}
	}
	t.Fatalf("#%s never took the focus from Tab; focus is on %q", id, adminEval(t, ctx, `document.activeElement ? document.activeElement.outerHTML.slice(0, 120) : ""`))
}

// checkFocusVisible: the focused element matches :focus-visible and draws an
// outline of at least 2 px.
func checkFocusVisible(t *testing.T, ctx context.Context, id string) {
	t.Helper()
	got := adminEval(t, ctx, `(() => { const e = document.activeElement, s = getComputedStyle(e);
		return String(e.matches(':focus-visible') && s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2) })()`)
	if got != "true" {
		t.Errorf("#%s has the focus but no visible focus indicator", id)
	}
}
