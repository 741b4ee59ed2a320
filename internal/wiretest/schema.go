// Package wiretest checks what the gateway emits against the OpenAI OpenAPI spec kept in
// testdata/spec at the repository root. Only tests import it.
package wiretest

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

const specURL = "file:///openai-openapi.json"

var (
	compileOnce sync.Once
	compiler    *jsonschema.Compiler
	compileErr  error
	mu          sync.Mutex
	schemas     = map[string]*jsonschema.Schema{}
)

// RepoRoot returns the repository root (the directory holding go.mod) above the working directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Schema returns the compiled schema #/components/schemas/<name> of the OpenAI spec, in Draft 2020 mode.
func Schema(t testing.TB, name string) *jsonschema.Schema {
	t.Helper()
	compileOnce.Do(func() {
		raw, err := os.ReadFile(filepath.Join(RepoRoot(t), "testdata", "spec", "openai-openapi.json"))
		if err != nil {
			compileErr = err
			return
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			compileErr = err
			return
		}
		c := jsonschema.NewCompiler()
		c.DefaultDraft(jsonschema.Draft2020)
		if err := c.AddResource(specURL, recursiveToRef(nullableToAnyOf(doc))); err != nil {
			compileErr = err
			return
		}
		compiler = c
	})
	if compileErr != nil {
		t.Fatalf("loading the OpenAI spec: %v", compileErr)
	}
	mu.Lock()
	defer mu.Unlock()
	if s, ok := schemas[name]; ok {
		return s
	}
	s, err := compiler.Compile(specURL + "#/components/schemas/" + name)
	if err != nil {
		t.Fatalf("compiling schema %s: %v", name, err)
	}
	schemas[name] = s
	return s
}

// Validate fails the test when body does not validate against the named schema.
func Validate(t testing.TB, name string, body []byte) {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s: body is not JSON: %v\n%s", name, err, body)
	}
	if err := Schema(t, name).Validate(v); err != nil {
		t.Fatalf("%s: body does not validate: %v\n%s", name, err, body)
	}
}

// nullableToAnyOf rewrites OpenAPI 3.0's `nullable: true`, which Draft 2020 ignores, into
// anyOf [schema, null], so that the spec means what its authors intended (finish_reason: null
// in a stream chunk is valid), and its boolean exclusiveMinimum/exclusiveMaximum into Draft
// 2020's numeric ones.
func nullableToAnyOf(v any) any {
	switch n := v.(type) {
	case map[string]any:
		for k, c := range n {
			n[k] = nullableToAnyOf(c)
		}
		// OpenAPI 3.0's boolean exclusiveMinimum/exclusiveMaximum qualify minimum/maximum;
		// Draft 2020 wants the bound itself
		for _, b := range [][2]string{{"exclusiveMinimum", "minimum"}, {"exclusiveMaximum", "maximum"}} {
			if ex, ok := n[b[0]].(bool); ok {
				delete(n, b[0])
				if bound, has := n[b[1]]; ex && has {
					n[b[0]] = bound
					delete(n, b[1])
				}
			}
		}
		if nb, ok := n["nullable"].(bool); ok {
			delete(n, "nullable")
			if nb {
				return map[string]any{"anyOf": []any{n, map[string]any{"type": "null"}}}
			}
		}
		return n
	case []any:
		for i, c := range n {
			n[i] = nullableToAnyOf(c)
		}
	}
	return v
}

// recursiveToRef rewrites Draft 2019's $recursiveAnchor / $recursiveRef "#", which the spec's
// compound filters use and Draft 2020 rejects, into a $ref to the schema that holds the anchor.
func recursiveToRef(doc any) any {
	root, _ := doc.(map[string]any)
	comps, _ := root["components"].(map[string]any)
	schemas, _ := comps["schemas"].(map[string]any)
	for name, sch := range schemas {
		m, ok := sch.(map[string]any)
		if !ok || m["$recursiveAnchor"] == nil {
			continue
		}
		delete(m, "$recursiveAnchor")
		replaceRecursiveRef(m, "#/components/schemas/"+name)
	}
	return doc
}

func replaceRecursiveRef(v any, ref string) {
	switch n := v.(type) {
	case map[string]any:
		if r, ok := n["$recursiveRef"]; ok && r == "#" {
			delete(n, "$recursiveRef")
			n["$ref"] = ref
		}
		for _, c := range n {
			replaceRecursiveRef(c, ref)
		}
	case []any:
		for _, c := range n {
			replaceRecursiveRef(c, ref)
		}
	}
}
