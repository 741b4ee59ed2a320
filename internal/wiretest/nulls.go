package wiretest

import (
	"bytes"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// ValidateNullAsAbsent is Validate for objects the OpenAI API returns with null in optional
// fields the spec types without `nullable` (Batch.failed_at, Batch.errors, OpenAIFile.expires_at,
// ...: the spec's own examples show those nulls, and the SDKs read null as absent). Every
// object member whose value is null is removed before validating, so a null optional field
// passes, a null required field fails as missing, and every non-null value is checked against
// its schema.
func ValidateNullAsAbsent(t testing.TB, name string, body []byte) {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s: body is not JSON: %v\n%s", name, err, body)
	}
	if err := Schema(t, name).Validate(dropNulls(v)); err != nil {
		t.Fatalf("%s: body does not validate (nulls taken as absent): %v\n%s", name, err, body)
	}
}

// dropNulls removes the null members of every object in v.
func dropNulls(v any) any {
	switch n := v.(type) {
	case map[string]any:
		for k, c := range n {
			if c == nil {
				delete(n, k)
				continue
			}
			n[k] = dropNulls(c)
		}
	case []any:
		for i, c := range n {
			n[i] = dropNulls(c)
		}
	}
	return v
}
