package admin

import (
	"bytes"
	"embed"
	"html/template"
	"net/http"
	"strings"

	"github.com/usher-oidc/usher/grants"
)

//go:embed templates/admin/*.html
var adminTemplateFS embed.FS

// adminTemplates: each page is the layout plus its own "content".
var adminTemplates = func() map[string]*template.Template {
	funcs := template.FuncMap{
		"join": strings.Join,
		"errs": func(m map[string][]string, field string) []string { return m[field] },
	}
	layout := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(adminTemplateFS, "templates/admin/layout.html"))
	out := map[string]*template.Template{}
	for _, name := range []string{"dashboard", "invitation", "user", "error"} {
		t := template.Must(layout.Clone())
		out[name] = template.Must(t.ParseFS(adminTemplateFS, "templates/admin/"+name+".html"))
	}
	return out
}()

// adminPage is what the layout needs; Page is the page's own data.
type adminPage struct {
	Title  string
	User   *grants.User
	CSRF   string
	Notice string
	Page   any

	// Filled by render.
	Base      string
	Nonce     string
	UserLabel string
	AdminRole string
}

type errorPage struct {
	Heading, Message, Hint string
	LinkURL, LinkText      string
}

func (h *Page) render(w http.ResponseWriter, r *http.Request, status int, name string, p adminPage) {
	p.Base = strings.TrimSuffix(h.Issuer, "/")
	p.Nonce, _ = r.Context().Value(ctxKeyNonce{}).(string)
	p.AdminRole = h.AdminRole
	if p.User != nil {
		p.UserLabel = userLabel(p.User)
	}
	var buf bytes.Buffer
	if err := adminTemplates[name].ExecuteTemplate(&buf, "layout", p); err != nil {
		h.Logger.ErrorContext(r.Context(), "admin page: rendering", "page", name, "err", err)
		http.Error(w, "internal error rendering the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}
