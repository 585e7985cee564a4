package main

import (
	"bufio"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// The README's gateway table lists exactly the gateway's own variables
// (GATEWAY_* and CONTEXT_API_KEY), with their defaults.
func TestReadmeConfigTableMatchesConfig(t *testing.T) {
	f, err := os.Open("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	row := regexp.MustCompile("^\\| `([A-Z_]+)` \\| ([^|]*) \\|")
	documented := map[string]string{}
	inSection := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			inSection = line == "### The gateway"
			continue
		}
		if m := row.FindStringSubmatch(line); inSection && m != nil {
			def := strings.Trim(strings.TrimSpace(m[2]), "`")
			if def == "(empty)" {
				def = ""
			}
			documented[m[1]] = def
		}
	}
	want := map[string]string{}
	typ := reflect.TypeFor[config]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		if name := f.Tag.Get("env"); strings.HasPrefix(name, "GATEWAY_") || name == "CONTEXT_API_KEY" {
			want[name] = f.Tag.Get("envDefault")
		}
	}
	for name, def := range want {
		if got, ok := documented[name]; !ok {
			t.Errorf("%s is not in the README's gateway table", name)
		} else if got != def {
			t.Errorf("%s: README default %q, code default %q", name, got, def)
		}
	}
	for name := range documented {
		if _, ok := want[name]; !ok {
			t.Errorf("README's gateway table documents %s, which is not a gateway variable", name)
		}
	}
}
