package admin

import (
	"strings"
	"testing"

	"github.com/usher-oidc/usher/grants"
)

func TestAdminParseJSONObject(t *testing.T) {
	for _, tc := range []struct {
		in, wantErr string
		wantNil     bool
	}{
		{in: "", wantNil: true},
		{in: "  \n", wantNil: true},
		{in: `{"crm_id": "CRM-1", "n": 2}`},
		{in: `{"a": 1,}`, wantErr: "not valid JSON"},
		{in: "{\n  \"a\": 1\n  \"b\": 2}", wantErr: "line 3"},
		{in: `[1, 2]`, wantErr: "must be a JSON object"},
		{in: `"text"`, wantErr: "must be a JSON object"},
		{in: `null`, wantErr: "not null"},
		{in: `{"a": 1} {"b": 2}`, wantErr: "not valid JSON"},
	} {
		m, err := parseJSONObject(tc.in)
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parseJSONObject(%q) error = %v, want one containing %q", tc.in, err, tc.wantErr)
			}
		case err != nil:
			t.Errorf("parseJSONObject(%q): %v", tc.in, err)
		case tc.wantNil != (m == nil):
			t.Errorf("parseJSONObject(%q) = %v", tc.in, m)
		}
	}
}

func TestAdminFieldErrorsLandOnFormFields(t *testing.T) {
	errs := map[string][]string{}
	addFieldErrors(errs, &grants.ValidationError{Errors: []grants.FieldError{
		{Field: "email", Message: "is required"},
		{Field: "roles[1]", Message: `role "x" is not in the catalog`},
		{Field: "claims.sub", Message: "is a registered claim"},
		{Field: "expires_in", Message: "too long"},
		{Field: "inviter", Message: "too long"},
	}})
	want := map[string]string{
		"email": "is required", "roles": `role "x" is not in the catalog`, "claims": "sub: is a registered claim",
		"expires": "too long", "form": "inviter: too long",
	}
	for field, msg := range want {
		if len(errs[field]) != 1 || errs[field][0] != msg {
			t.Errorf("errors[%q] = %q, want [%q]", field, errs[field], msg)
		}
	}
}
