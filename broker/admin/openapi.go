package admin

import (
	_ "embed"
	"net/http"
)

// openAPIDocument is the admin API's contract, written by hand. The e2e
// tests validate every admin API request and response they make against
// it, so it cannot drift from the handlers.
//
//go:embed openapi.json
var openAPIDocument []byte

// OpenAPIDocument returns the admin API's OpenAPI 3.1 document.
func OpenAPIDocument() []byte { return append([]byte(nil), openAPIDocument...) }

// serveOpenAPI answers GET /api/openapi.json. It needs no token: the
// contract holds no secret, and tools fetch it before they have one.
func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(openAPIDocument)
}
