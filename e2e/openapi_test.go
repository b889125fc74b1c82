package e2e

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/broker/admin"
)

// The admin API's contract (broker/admin/openapi.json), loaded once.
var contract = sync.OnceValues(func() (routers.Router, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(admin.OpenAPIDocument())
	if err != nil {
		return nil, err
	}
	if err := doc.Validate(loader.Context); err != nil {
		return nil, err
	}
	return legacy.NewRouter(doc)
})

// checkContract validates one admin API exchange against the contract. A
// request the contract refuses must be refused by usher too (4xx): tests
// send bad requests on purpose. Every answer must be one the contract
// describes, errors included.
func checkContract(t testing.TB, req *http.Request, reqBody []byte, resp *http.Response, respBody []byte) {
	t.Helper()
	router, err := contract()
	if err != nil {
		t.Fatalf("broker/admin/openapi.json: %v", err)
	}
	req = req.Clone(context.Background())
	req.Body = io.NopCloser(bytes.NewReader(reqBody))
	route, params, err := router.FindRoute(req)
	if err != nil {
		// Only the catch-all answers there: 404, a problem document.
		if resp.StatusCode != http.StatusNotFound || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
			t.Errorf("contract: %s %s is in no path of broker/admin/openapi.json (%v), yet usher answered %d", req.Method, req.URL.Path, err, resp.StatusCode)
		}
		return
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil && resp.StatusCode < 400 {
		t.Errorf("contract: usher accepted (%d) a request broker/admin/openapi.json refuses: %s %s: %v", resp.StatusCode, req.Method, req.URL, err)
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true}}
	out.SetBodyBytes(respBody)
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		t.Errorf("contract: usher's answer to %s %s does not match broker/admin/openapi.json: %v\n%s", req.Method, req.URL, err, clipText(string(respBody)))
	}
}

// TestOpenAPIServed: the document served is the one the tests validate
// against, and it is a valid OpenAPI 3.1 document.
func TestOpenAPIServed(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	if _, err := contract(); err != nil {
		t.Fatalf("broker/admin/openapi.json: %v", err)
	}
	res := apiCall(t, d, http.MethodGet, "/api/openapi.json", "", nil)
	if res.status != http.StatusOK || res.raw != string(admin.OpenAPIDocument()) || res.body["openapi"] != "3.1.0" {
		t.Fatalf("GET /api/openapi.json: %d %.200s", res.status, res.raw)
	}
}
