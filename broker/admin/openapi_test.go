package admin

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// apiRouteRe finds the admin API's routes where they are registered.
var apiRouteRe = regexp.MustCompile(`mux\.Handle(?:Func)?\("(GET|POST|PUT|PATCH|DELETE) (/api/[^"]*)"`)

// TestOpenAPIDescribesEveryRoute: every admin API route registered in this
// package has an operation in openapi.json, and every operation a route.
// The e2e tests check the shapes; this catches a route no test calls.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDocument, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi = %q, want 3.1.0", doc.OpenAPI)
	}
	var documented []string
	for path, ops := range doc.Paths {
		for method := range ops {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	files, _ := filepath.Glob("*.go")
	var routes []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range apiRouteRe.FindAllStringSubmatch(string(src), -1) {
			routes = append(routes, m[1]+" "+m[2])
		}
	}
	if len(routes) < 10 {
		t.Fatalf("found only %d admin API routes; has their registration changed? %v", len(routes), routes)
	}
	for _, r := range routes {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is not described in broker/admin/openapi.json", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(routes, d) {
			t.Errorf("broker/admin/openapi.json describes %s, which no route serves", d)
		}
	}
}
