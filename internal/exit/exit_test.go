package exit

import (
	"go/ast"
	"go/constant"
	"go/parser"
	"go/token"
	"testing"
)

// Every exit code this package declares has its meaning in Meanings, once: the help
// topic and the commands' help are built from it.
func TestEveryCodeHasAMeaning(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "exit.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	declared := map[int64][]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			v := spec.(*ast.ValueSpec)
			for i, name := range v.Names {
				lit, ok := v.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.INT {
					t.Fatalf("constant %s is not an integer literal", name.Name)
				}
				n, _ := constant.Int64Val(constant.MakeFromLiteral(lit.Value, lit.Kind, 0))
				declared[n] = append(declared[n], name.Name)
			}
		}
	}
	seen := map[int]bool{}
	for _, m := range Meanings {
		if seen[m.Code] {
			t.Errorf("exit code %d has two meanings", m.Code)
		}
		seen[m.Code] = true
		if declared[int64(m.Code)] == nil {
			t.Errorf("exit code %d has a meaning but no constant", m.Code)
		}
	}
	for code, names := range declared {
		if !seen[int(code)] {
			t.Errorf("exit code %d (%v) has no meaning in Meanings", code, names)
		}
	}
	if len(declared) < 5 {
		t.Errorf("read %d exit codes from exit.go, want at least 5", len(declared))
	}
}
