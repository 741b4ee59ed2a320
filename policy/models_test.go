package policy

import "testing"

func TestCatalog(t *testing.T) {
	c, err := NewCatalog([]*Model{
		{Name: "demo-llama", Aliases: []string{"llama"}, ContextWindow: 8192},
		{Name: "qwen", UpstreamName: "Qwen/Qwen2.5-7B"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"llama": "demo-llama", "demo-llama": "demo-llama", "qwen": "qwen"} {
		m, ok := c.Resolve(name)
		if !ok || m.Name != want {
			t.Errorf("Resolve(%q) = %v, %v", name, m, ok)
		}
	}
	if _, ok := c.Resolve("gpt-4"); ok {
		t.Error("unknown model resolved")
	}
	if m, _ := c.Resolve("qwen"); m.Upstream() != "Qwen/Qwen2.5-7B" {
		t.Errorf("upstream name %q", m.Upstream())
	}
	if got := c.Models(); len(got) != 2 || got[0].Name != "demo-llama" {
		t.Errorf("Models() = %v", got)
	}
	if _, err := NewCatalog([]*Model{{Name: "a", Aliases: []string{"x"}}, {Name: "b", Aliases: []string{"x"}}}); err == nil {
		t.Error("alias used twice accepted")
	}
	if _, err := NewCatalog([]*Model{{Name: "a"}, {Name: "a"}}); err == nil {
		t.Error("name used twice accepted")
	}
}
