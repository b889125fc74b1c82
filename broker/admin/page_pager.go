package admin

import "net/url"

// pager is the links of a paged admin list: path with the list's filters
// (the non-empty ones, kept in the URL) and the cursor of the page.
type pager struct {
	NextURL, FirstURL string
}

// pages returns the links to the next page (when there is one) and back to
// the first (when this is not it).
func (h *Page) pages(path string, filters [][2]string, next, cursor string) pager {
	link := func(cur string) string {
		v := url.Values{}
		for _, kv := range append(filters, [2]string{"cursor", cur}) {
			if kv[1] != "" {
				v.Set(kv[0], kv[1])
			}
		}
		if len(v) == 0 {
			return h.url(path)
		}
		return h.url(path + "?" + v.Encode())
	}
	var p pager
	if next != "" {
		p.NextURL = link(next)
	}
	if cursor != "" {
		p.FirstURL = link("")
	}
	return p
}
