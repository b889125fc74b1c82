package messages

import (
	"testing"
)

func TestNegotiateAndFallback(t *testing.T) {
	defer Add("fr", Catalog{"accept.title": "Acceptez votre invitation à {app}", "accept.later": "Plus tard"})()
	for _, tc := range []struct{ ui, accept, want string }{
		{"", "", "en"},
		{"", "fr-CH, fr;q=0.9, en;q=0.8", "fr"},
		{"", "de, en;q=0.5", "en"},
		{"", "de", "en"},
		{"fr", "en", "fr"},
		{"de fr-CA", "en", "fr"},
		{"en", "fr", "en"},
		{"x-bogus-!!", "fr", "fr"},
		{"", "garbage;;q=", "en"},
	} {
		if got := Negotiate(tc.ui, tc.accept); got != tc.want {
			t.Errorf("Negotiate(%q, %q) = %q, want %q", tc.ui, tc.accept, got, tc.want)
		}
	}
	fr := For("fr")
	if got := fr.Text("accept.title", "app", "Acme"); got != "Acceptez votre invitation à Acme" {
		t.Errorf("fr title = %q", got)
	}
	if got := fr.Text("accept.other"); got != "Use another account" {
		t.Errorf("a key missing in fr = %q, want the English text", got)
	}
	if got := For("de").Lang(); got != "en" {
		t.Errorf("Lang of a language without catalog = %q", got)
	}
}

func TestExpand(t *testing.T) {
	p := For("en")
	if got := p.HTML("accept.invited_by", "inviter", "<Ada>", "email", "a&b@example.com"); got != "&lt;Ada&gt; invited <strong>a&amp;b@example.com</strong>." {
		t.Errorf("HTML = %q", got)
	}
	if got := p.Text("accept.invited_by", "inviter", "<Ada>", "email", "a@example.com"); got != "<Ada> invited a@example.com." {
		t.Errorf("Text = %q", got)
	}
	if got := p.Text("no.such.key"); got != "no.such.key" {
		t.Errorf("unknown key = %q", got)
	}
}
