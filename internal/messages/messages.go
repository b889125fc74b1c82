package messages

import (
	"embed"
	"encoding/json"
	"fmt"
	"html"
	"html/template"
	"path"
	"strings"
	"sync"

	"golang.org/x/text/language"
)

// Default is the language every key exists in.
const Default = "en"

// Catalog maps keys to texts of one language.
type Catalog map[string]string

//go:embed catalogs/*.json
var files embed.FS

var (
	mu       sync.RWMutex
	catalogs = map[string]Catalog{}
	matcher  language.Matcher
	tags     []language.Tag // matcher's order: tags[0] is Default
)

func init() {
	entries, err := files.ReadDir("catalogs")
	if err != nil {
		panic(err)
	}
	for _, e := range entries {
		raw, err := files.ReadFile("catalogs/" + e.Name())
		if err != nil {
			panic(err)
		}
		var c Catalog
		if err := json.Unmarshal(raw, &c); err != nil {
			panic(fmt.Sprintf("messages: catalog %s: %v", e.Name(), err))
		}
		catalogs[strings.TrimSuffix(e.Name(), path.Ext(e.Name()))] = c
	}
	rebuild()
}

// rebuild refreshes the matcher after the set of languages changed; mu is held.
func rebuild() {
	tags = []language.Tag{language.Make(Default)}
	for lang := range catalogs {
		if lang != Default {
			tags = append(tags, language.Make(lang))
		}
	}
	matcher = language.NewMatcher(tags)
}

// Add installs (or replaces) the catalog of lang and returns a function
// that removes it again. usher ships English only; tests add others to
// check the choice of language and the fallback per key.
func Add(lang string, c Catalog) (remove func()) {
	mu.Lock()
	defer mu.Unlock()
	catalogs[lang] = c
	rebuild()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		delete(catalogs, lang)
		rebuild()
	}
}

// Negotiate picks the language of a page: the first of the OpenID Connect
// ui_locales (space-separated BCP 47 tags) that has a catalog, else the
// best match for the Accept-Language header, else Default.
func Negotiate(uiLocales, acceptLanguage string) string {
	mu.RLock()
	defer mu.RUnlock()
	for _, s := range strings.Fields(uiLocales) {
		t, err := language.Parse(s)
		if err != nil {
			continue
		}
		if _, idx, conf := matcher.Match(t); conf >= language.High {
			return tagName(idx)
		}
	}
	if acceptLanguage != "" {
		if want, _, err := language.ParseAcceptLanguage(acceptLanguage); err == nil && len(want) > 0 {
			if _, idx, conf := matcher.Match(want...); conf >= language.High {
				return tagName(idx)
			}
		}
	}
	return Default
}

func tagName(idx int) string { return tags[idx].String() }

// Printer looks texts up in one language, falling back to Default per key.
type Printer struct{ lang string }

// For returns the Printer of lang ("" or an unknown language: Default).
func For(lang string) Printer { return Printer{lang: lang} }

// Lang is the language the Printer was asked for, for <html lang>.
func (p Printer) Lang() string {
	mu.RLock()
	defer mu.RUnlock()
	if _, ok := catalogs[p.lang]; ok {
		return p.lang
	}
	return Default
}

func (p Printer) lookup(key string) string {
	mu.RLock()
	defer mu.RUnlock()
	if s, ok := catalogs[p.lang][key]; ok {
		return s
	}
	if s, ok := catalogs[Default][key]; ok {
		return s
	}
	// A key without a text is a bug; showing the key makes it visible
	// rather than an empty gap.
	return key
}

// Text is the text of key with its {name} arguments replaced by args,
// given as name, value pairs.
func (p Printer) Text(key string, args ...string) string {
	return expand(p.lookup(key), args, func(s string, _ bool) string { return s })
}

// HTML is Text escaped for HTML, with {*name} arguments in <strong>.
func (p Printer) HTML(key string, args ...string) template.HTML {
	return template.HTML(expand(p.lookup(key), args, func(s string, bold bool) string {
		s = html.EscapeString(s)
		if bold {
			return "<strong>" + s + "</strong>"
		}
		return s
	}))
}

// expand replaces {name} and {*name} in text by the argument named name,
// passing the literal pieces and the values through out.
func expand(text string, args []string, out func(s string, bold bool) string) string {
	var b strings.Builder
	for {
		open := strings.IndexByte(text, '{')
		if open < 0 {
			break
		}
		end := strings.IndexByte(text[open:], '}')
		if end < 0 {
			break
		}
		b.WriteString(out(text[:open], false))
		name, bold := text[open+1:open+end], false
		if strings.HasPrefix(name, "*") {
			name, bold = name[1:], true
		}
		b.WriteString(out(arg(args, name), bold))
		text = text[open+end+1:]
	}
	b.WriteString(out(text, false))
	return b.String()
}

func arg(args []string, name string) string {
	for i := 0; i+1 < len(args); i += 2 {
		if args[i] == name {
			return args[i+1]
		}
	}
	return ""
}
