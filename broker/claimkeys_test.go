package broker

import (
	"errors"
	"testing"
)

func TestFoldingClaimKeys(t *testing.T) {
	for _, tc := range []struct {
		payload string
		want    error // nil, ErrFoldingClaimKeys, or errAny
	}{
		{`{"sub":"a","scope":"x","crm_id":1,"nested":{"sub":"b","SUB":"c"}}`, nil},
		{`{}`, nil},
		{`{"sub":"a","\u017fub":"b"}`, ErrFoldingClaimKeys},
		{"{\"sub\":\"a\",\"\u017fub\":\"b\"}", ErrFoldingClaimKeys},
		{`{"scope":"r","SCOPE":"w"}`, ErrFoldingClaimKeys},
		{`{"nickname":"a","nic\u212aname":"b"}`, ErrFoldingClaimKeys},
		{`{"roles":[],"role\u017f":["usher:admin"]}`, ErrFoldingClaimKeys},
		{`{"sub":"a","sub":"b"}`, ErrFoldingClaimKeys},
		{`[]`, errAny},
		{`{"sub":`, errAny},
		{`not json`, errAny},
	} {
		err := foldingClaimKeys([]byte(tc.payload))
		switch {
		case tc.want == nil && err != nil:
			t.Errorf("foldingClaimKeys(%s) = %v, want nil", tc.payload, err)
		case tc.want == errAny && err == nil:
			t.Errorf("foldingClaimKeys(%s) = nil, want an error", tc.payload)
		case tc.want == ErrFoldingClaimKeys && !errors.Is(err, ErrFoldingClaimKeys):
			t.Errorf("foldingClaimKeys(%s) = %v, want ErrFoldingClaimKeys", tc.payload, err)
		}
	}
}

var errAny = errors.New("any error")
