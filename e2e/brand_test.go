package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
	"github.com/usher-oidc/usher/internal/messages"
	"github.com/usher-oidc/usher/internal/testkit"
	"github.com/usher-oidc/usher/notify/mail"
)

const (
	brandName   = "Acme Rockets"
	brandAccent = "#0a7d55"
	// brandLogoSVG is a small logo: a green disc.
	brandLogoSVG = `<svg xmlns="http://www.w3.org/2000/svg" width="80" height="80" viewBox="0 0 80 80"><circle cx="40" cy="40" r="36" fill="#0a7d55"/></svg>`
)

// withBrand gives the demo SPA a display name and usher a logo and accent.
func withBrand(t *testing.T) func(*config.Config) {
	logo := filepath.Join(t.TempDir(), "logo.svg")
	if err := os.WriteFile(logo, []byte(brandLogoSVG), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(c *config.Config) {
		c.Branding = config.Branding{Logo: logo, Accent: brandAccent}
		for i := range c.Clients {
			if c.Clients[i].ID == app.DevSPAClientID {
				c.Clients[i].Name = brandName
			}
		}
	}
}

// What an invitee sees is the product: the client's display name, its logo
// (served by usher, embedded in the mail) and accent, with "usher" only in a
// footer; in the mail (rendered in Chromium) and on the accept page, at
// desktop and phone width, with screenshots in the test's artifacts.
func TestBrandedInviteeScreens(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{Configure: withBrand(t)})
	issuer := strings.TrimSuffix(d.IssuerURL, "/")
	shots := adminArtifactsDir(t)
	const email = "branded-invitee@example.com"

	inv := invite(t, d, funnelToken(t, d, "invitations:write invitations:read"),
		map[string]any{"email": email, "client_id": app.DevSPAClientID, "send_email": true})
	var msg mail.Message
	testkit.Eventually(t, "the invitation mail", func() bool {
		for _, m := range d.Outbox.Messages() {
			if m.To == email {
				msg = m
				return true
			}
		}
		return false
	})
	logoPath := checkBrandedMail(t, msg, inv)
	checkLogoServed(t, issuer+logoPath)

	mailSrv := serveMail(t, msg)
	browser := newBrowser(t)
	for _, w := range screenWidths {
		do(t, browser, "sizing the window for the mail", viewport(w.width, w.mobile))
		do(t, browser, "opening the mail's HTML", chromedp.Navigate(mailSrv))
		checkBrandedScreen(t, browser, "the mail at "+w.name, w.width)
		adminScreenshot(t, browser, shots, "mail-"+w.name+".png")
	}

	do(t, browser, "sizing the window", viewport(1280, false))
	do(t, browser, "following the mailed link", chromedp.Navigate(msg.Link))
	signUpAtDevIDP(t, browser, email, "branded-password-1", "Bran Ded")
	pollJS(t, browser, "waiting for usher's accept page", 20*time.Second, `!!document.querySelector('#accept')`)
	for _, w := range screenWidths {
		do(t, browser, "sizing the window for the accept page", viewport(w.width, w.mobile))
		checkBrandedScreen(t, browser, "the accept page at "+w.name, w.width)
		if src := adminEval(t, browser, `document.querySelector('#brand-logo').src`); src != issuer+logoPath {
			t.Errorf("accept page logo src = %q, want usher's own %q", src, issuer+logoPath)
		}
		if got := adminEval(t, browser, `document.title`); got != "Accept your invitation to "+brandName {
			t.Errorf("accept page title = %q", got)
		}
		if got := adminEval(t, browser, `getComputedStyle(document.querySelector('#accept')).backgroundColor`); got != "rgb(10, 125, 85)" {
			t.Errorf("Accept button colour = %q, want the accent", got)
		}
		adminScreenshot(t, browser, shots, "accept-"+w.name+".png")
	}
	do(t, browser, "sizing the window", viewport(1280, false))
	// Last, since it skips the test without axe-core installed.
	checkA11y(t, browser, axeSource(t), "the branded accept page")
	acceptInBrowser(t, browser, brandName, email)
	waitSignedIn(t, browser)
}

// screenWidths are the widths screenshots are taken at.
var screenWidths = []struct {
	name   string
	width  int64
	mobile bool
}{{"desktop", 1280, false}, {"phone", 390, true}}

func viewport(width int64, mobile bool) chromedp.Action[chromedp.Void] {
	if mobile {
		return chromedp.EmulateViewport(width, 844, chromedp.EmulateMobile)
	}
	return chromedp.EmulateViewport(width, 900)
}

// checkBrandedMail checks the invitation mail names the app and embeds the
// logo, and returns the logo's path on usher (/brand/<name>).
func checkBrandedMail(t *testing.T, msg mail.Message, inv map[string]any) string {
	t.Helper()
	if !strings.Contains(msg.Subject, brandName) || !strings.Contains(msg.Text, brandName) || !strings.Contains(msg.HTML, brandName) {
		t.Errorf("mail does not name %q: subject %q\n%s", brandName, msg.Subject, msg.Text)
	}
	if msg.Link != inv["url"] {
		t.Errorf("mail link %q, want %q", msg.Link, inv["url"])
	}
	if len(msg.Inline) != 1 || string(msg.Inline[0].Data) != brandLogoSVG || msg.Inline[0].ContentType != "image/svg+xml" {
		t.Fatalf("mail inline parts = %+v, want the logo", msg.Inline)
	}
	name := msg.Inline[0].Name
	if !strings.Contains(msg.HTML, `src="cid:`+name+`"`) || strings.Contains(msg.HTML, "http://127.0.0.1/brand") {
		t.Errorf("mail HTML does not show the embedded logo %s", name)
	}
	// usher only in the footer: the text part's last line.
	lines := strings.Split(strings.TrimSpace(msg.Text), "\n")
	if body := strings.Join(lines[:len(lines)-1], "\n"); strings.Contains(strings.ToLower(body+msg.Subject), "usher") {
		t.Errorf("mail names usher outside its footer:\n%s", msg.Text)
	}
	return "/brand/" + name
}

// checkLogoServed: usher serves the logo itself, typed, not sniffed, cached.
func checkLogoServed(t *testing.T, u string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != brandLogoSVG {
		t.Fatalf("GET %s: %d %q", u, resp.StatusCode, body)
	}
	for k, want := range map[string]string{"Content-Type": "image/svg+xml", "X-Content-Type-Options": "nosniff",
		"Cache-Control": "public, max-age=31536000, immutable"} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("logo %s = %q, want %q", k, got, want)
		}
	}
	other, err := http.Get(strings.TrimSuffix(u, ".svg") + "0.svg")
	if err != nil {
		t.Fatal(err)
	}
	other.Body.Close()
	if other.StatusCode != http.StatusNotFound {
		t.Errorf("another name under /brand/: %d, want 404", other.StatusCode)
	}
}

// serveMail serves the mail's HTML on loopback as a mail client shows it:
// the cid: parts are the message's own, so nothing is fetched from elsewhere.
func serveMail(t *testing.T, msg mail.Message) string {
	t.Helper()
	html := msg.HTML
	for _, in := range msg.Inline {
		html = strings.ReplaceAll(html, "cid:"+in.Name, "data:"+in.ContentType+";base64,"+base64.StdEncoding.EncodeToString(in.Data))
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; img-src data:; style-src 'unsafe-inline'")
		_, _ = io.WriteString(w, html)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// checkBrandedScreen: the page shows the display name and a loaded logo,
// names usher at most in its footer, and does not scroll sideways.
func checkBrandedScreen(t *testing.T, ctx context.Context, what string, width int64) {
	t.Helper()
	pollJS(t, ctx, "waiting for "+what, 20*time.Second,
		`document.readyState === "complete" && !!document.querySelector('#brand-logo') && document.querySelector('#brand-logo').complete`)
	if got := adminText(t, ctx, `#app-name`); got != brandName {
		t.Errorf("%s: app name %q, want %q", what, got, brandName)
	}
	if got := adminEval(t, ctx, `String(document.querySelector('#brand-logo').naturalWidth > 0)`); got != "true" {
		t.Errorf("%s: the logo did not load", what)
	}
	body := adminEval(t, ctx, `(() => { const c = document.body.cloneNode(true); c.querySelectorAll('footer, #footer').forEach(f => f.remove()); return c.innerText + " " + document.title })()`)
	if strings.Contains(strings.ToLower(body), "usher") {
		t.Errorf("%s names usher outside its footer: %q", what, body)
	}
	if got := adminEval(t, ctx, `document.documentElement.scrollWidth + " " + window.innerWidth`); !fitsWidth(got) || !strings.HasSuffix(got, fmt.Sprint(" ", width)) {
		t.Errorf("%s scrolls sideways or has the wrong width: scrollWidth innerWidth = %s", what, got)
	}
}

// The invitee's language decides the texts: Accept-Language on the pages
// (a test-only French catalog with a few texts; the others fall back to
// English), ui_locales of the authorization request over it, and the
// invitation's locale in the mail.
func TestMessageCatalogLanguage(t *testing.T) {
	// Not parallel: the catalog is global, and parallel tests wait until
	// the sequential ones are done.
	defer messages.Add("fr", messages.Catalog{
		"invite.not_found.title": "Invitation introuvable",
		"accept.other":           "Utiliser un autre compte",
		"mail.subject":           "Vous êtes invité à {app}",
	})()
	d := startDev(t, app.DevOptions{Configure: withBrand(t)})
	api := funnelToken(t, d, "invitations:write invitations:read")
	t.Run("Accept-Language", func(t *testing.T) { checkAcceptLanguage(t, d) })
	t.Run("ui_locales", func(t *testing.T) { checkUILocales(t, d, api) })
	t.Run("mail locale", func(t *testing.T) { checkMailLocale(t, d, api) })
}

// checkAcceptLanguage: a refused link's page in the browser's language.
func checkAcceptLanguage(t *testing.T, d *app.Dev) {
	issuer := strings.TrimSuffix(d.IssuerURL, "/")
	for _, tc := range []struct{ accept, title, lang string }{
		{"fr-CH, fr;q=0.9, en;q=0.5", "Invitation introuvable", "fr"},
		{"de, en;q=0.5", "Invitation not found", "en"},
		{"", "Invitation not found", "en"},
	} {
		req, _ := http.NewRequest(http.MethodGet, issuer+"/invite/inv_unknown0000000000000000000000", nil)
		req.Header.Set("Accept-Language", tc.accept)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		page := string(raw)
		if !strings.Contains(page, `<h1 id="title">`+tc.title+`</h1>`) || !strings.Contains(page, `<html lang="`+tc.lang+`">`) ||
			!strings.Contains(page, "This invitation link is not valid.") {
			t.Errorf("Accept-Language %q: want title %q in %s (message in English):\n%s", tc.accept, tc.title, tc.lang, page)
		}
		// The refusal of a link is branded too: name, logo from usher, no "usher" but the footer.
		if !strings.Contains(page, `<span id="app-name">`+brandName+`</span>`) || !strings.Contains(page, `<img id="brand-logo" src="/brand/logo-`) ||
			strings.Count(strings.ToLower(page), "usher") != 1 {
			t.Errorf("the refusal page is not branded:\n%s", page)
		}
	}
}

// checkUILocales: ui_locales=fr on the authorization request, in a browser
// that asks for English: the accept page is French where the catalog has a
// text.
func checkUILocales(t *testing.T, d *app.Dev, api string) {
	issuer := strings.TrimSuffix(d.IssuerURL, "/")
	const email = "francophone@example.com"
	inv := invite(t, d, api, map[string]any{"email": email, "client_id": app.DevSPAClientID, "send_email": false})
	token := strings.TrimPrefix(inv["url"].(string), issuer+"/invite/")
	q := url.Values{"client_id": {app.DevSPAClientID}, "redirect_uri": {d.SPAURL + "/callback"}, "response_type": {"code"},
		"scope": {"openid"}, "state": {"s"}, "code_challenge": {"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"},
		"code_challenge_method": {"S256"}, "ui_locales": {"fr"}, "invitation": {token}}
	browser := newBrowser(t)
	do(t, browser, "opening /authorize with ui_locales=fr", chromedp.Navigate(issuer+"/authorize?"+q.Encode()))
	signUpAtDevIDP(t, browser, email, "francophone-password-1", "Fran Cophone")
	pollJS(t, browser, "waiting for usher's accept page", 20*time.Second, `!!document.querySelector('#accept')`)
	if got := adminText(t, browser, `#other`); got != "Utiliser un autre compte" {
		t.Errorf("accept page with ui_locales=fr: #other = %q", got)
	}
	if got := adminText(t, browser, `#later`); got != "Not now" {
		t.Errorf("a text the French catalog lacks: #later = %q, want the English", got)
	}
	if got := adminEval(t, browser, `document.documentElement.lang`); got != "fr" {
		t.Errorf("<html lang> = %q", got)
	}
}

// checkMailLocale: the mail is written in the invitation's locale.
func checkMailLocale(t *testing.T, d *app.Dev, api string) {
	const email = "mail-fr@example.com"
	fr := invite(t, d, api, map[string]any{"email": email, "client_id": app.DevSPAClientID, "locale": "fr-CA"})
	if fr["locale"] != "fr-CA" {
		t.Errorf("the invitation's locale = %v", fr["locale"])
	}
	testkit.Eventually(t, "the French invitation mail", func() bool {
		for _, m := range d.Outbox.Messages() {
			if m.To == email {
				if m.Subject != "Vous êtes invité à "+brandName || !strings.Contains(m.Text, "If you did not expect this invitation") {
					t.Errorf("mail in fr-CA: subject %q, text\n%s", m.Subject, m.Text)
				}
				return true
			}
		}
		return false
	})
}
