package admin

import (
	"reflect"
	"slices"
	"testing"

	"github.com/usher-oidc/usher/client"
	"github.com/usher-oidc/usher/grants"
)

func TestDecodeStrictDetail(t *testing.T) {
	const unknown = "; see the API reference for the accepted fields."
	for _, tc := range []struct {
		body, want string
	}{
		{`{"email": "a@example.com"}`, ""},
		{`{"EMAIL": "a@example.com", "External_ID": "x"}`, ""}, // encoding/json matches names case-insensitively
		{`{"email": "a@example.com"} trailing`, ""},            // only the first value is read, as before
		{`{"email": "a@example.com", "colour": "red", "size": 1}`, `Unknown field "colour"` + unknown},
		{`{"may_grant_privileged": true}`, `Unknown field "may_grant_privileged"` + unknown},
		{`{"MayGrantPrivileged": true}`, `Unknown field "MayGrantPrivileged"` + unknown},
		{`{"a\"b": 1}`, `Unknown field "a\"b"` + unknown},
		{`{"email": 5, "colour": "red"}`, `Field "email" must be a JSON string.`},
		{`{"email": "a@example.com",}`, "The body is not valid JSON (at byte 27)."},
		{``, "The body is empty; send a JSON object."},
	} {
		var req grants.CreateRequest
		err := decodeStrict([]byte(tc.body), &req)
		got := ""
		if err != nil {
			got = jsonErrorDetail(err)
		}
		if got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.body, got, tc.want)
		}
	}
}

func TestJSONFieldNames(t *testing.T) {
	type inner struct {
		A string `json:"a"`
		B string
	}
	type outer struct {
		inner
		C      int `json:"c,omitempty"`
		D      int `json:"-"`
		E      int `json:"-,"`
		hidden int
	}
	_ = outer{hidden: 0}
	got := jsonFieldNames(reflect.TypeFor[*outer]())
	if want := []string{"a", "B", "c", "-"}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// TestCreateRequestWireMatchesGrants: the API decodes client.CreateRequest
// and hands grants.CreateRequest on; every member of one is a member of the
// other (grants' "-" field is set by the server, never read).
func TestCreateRequestWireMatchesGrants(t *testing.T) {
	wire := jsonFieldNames(reflect.TypeFor[client.CreateRequest]())
	var domain []string
	for _, n := range jsonFieldNames(reflect.TypeFor[grants.CreateRequest]()) {
		if n != "-" {
			domain = append(domain, n)
		}
	}
	if !slices.Equal(wire, domain) {
		t.Fatalf("client.CreateRequest members %q, grants.CreateRequest members %q", wire, domain)
	}
}
