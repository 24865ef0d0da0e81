package codecheck

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestTestFilesFollowTheRules fails for every positional row in a table of
// anonymous structs and every unjustified time.Sleep in a _test.go file.
func TestTestFilesFollowTheRules(t *testing.T) {
	walkGoFiles(t, parser.ParseComments, func(path string, fset *token.FileSet, f *ast.File) {
		if !strings.HasSuffix(path, "_test.go") {
			return
		}
		for _, p := range positionalRows(f) {
			t.Errorf("%s: positional table row; name its fields ({name: ..., want: ...})", fset.Position(p))
		}
		for _, p := range unjustifiedSleeps(fset, f) {
			t.Errorf("%s: time.Sleep in a test; wait on a condition (testenv.WaitFor) or use testing/synctest, "+
				"or say why the sleep is the thing under test in a `// sleep:` comment on the line or the line above", fset.Position(p))
		}
	})
}

// positionalRows returns where a row of a slice, array or map literal of
// anonymous structs lists its values without field names.
func positionalRows(f *ast.File) []token.Pos {
	var out []token.Pos
	ast.Inspect(f, func(n ast.Node) bool {
		lit, ok := n.(*ast.CompositeLit)
		if !ok || !anonymousStructTable(lit.Type) {
			return true
		}
		for _, e := range lit.Elts {
			if kv, ok := e.(*ast.KeyValueExpr); ok {
				e = kv.Value
			}
			if u, ok := e.(*ast.UnaryExpr); ok && u.Op == token.AND {
				e = u.X
			}
			row, ok := e.(*ast.CompositeLit)
			if !ok || len(row.Elts) == 0 {
				continue
			}
			if _, keyed := row.Elts[0].(*ast.KeyValueExpr); !keyed {
				out = append(out, row.Pos())
			}
		}
		return true
	})
	return out
}

// anonymousStructTable reports whether typ is a slice, array or map whose
// elements are anonymous structs (or pointers to them).
func anonymousStructTable(typ ast.Expr) bool {
	var elt ast.Expr
	switch t := typ.(type) {
	case *ast.ArrayType:
		elt = t.Elt
	case *ast.MapType:
		elt = t.Value
	default:
		return false
	}
	if star, ok := elt.(*ast.StarExpr); ok {
		elt = star.X
	}
	_, ok := elt.(*ast.StructType)
	return ok
}

// unjustifiedSleeps returns where f refers to time.Sleep with no comment
// starting "sleep:" on the same line or the line above.
func unjustifiedSleeps(fset *token.FileSet, f *ast.File) []token.Pos {
	name := timeImportName(f)
	if name == "" {
		return nil
	}
	var justified []int
	for _, g := range f.Comments {
		for _, c := range g.List {
			if strings.HasPrefix(strings.TrimSpace(strings.TrimPrefix(c.Text, "//")), "sleep:") {
				justified = append(justified, fset.Position(c.Pos()).Line)
			}
		}
	}
	var out []token.Pos
	ast.Inspect(f, func(n ast.Node) bool {
		sel, ok := n.(*ast.SelectorExpr)
		if !ok || sel.Sel.Name != "Sleep" {
			return true
		}
		if id, ok := sel.X.(*ast.Ident); !ok || id.Name != name {
			return true
		}
		line := fset.Position(sel.Pos()).Line
		if !slices.Contains(justified, line) && !slices.Contains(justified, line-1) {
			out = append(out, sel.Pos())
		}
		return true
	})
	return out
}

// timeImportName returns the name f imports package time under, or "" when
// f does not import it (or imports it blank or into the file scope).
func timeImportName(f *ast.File) string {
	for _, imp := range f.Imports {
		if path, err := strconv.Unquote(imp.Path.Value); err != nil || path != "time" {
			continue
		}
		if imp.Name == nil {
			return "time"
		}
		if imp.Name.Name == "_" || imp.Name.Name == "." {
			return ""
		}
		return imp.Name.Name
	}
	return ""
}

// TestRuleCheckers runs the checkers on a file with one case of each kind
// and expects exactly the bad ones reported, by line.
func TestRuleCheckers(t *testing.T) {
	const src = `package x

import (
	"testing"
	clock "time"
)

func TestX(t *testing.T) {
	good := []struct{ name string; n int }{{name: "a", n: 1}, {}}
	bad := []struct{ name string; n int }{
		{"b", 2},
	}
	badMap := map[string]*struct{ n int }{"c": {3}}
	clock.Sleep(1) // sleep: the stall is what is tested
	// sleep: a paused process
	clock.Sleep(2)
	clock.Sleep(3)
	// a comment that justifies nothing
	f := clock.Sleep
	type row struct{ n int }
	named := []row{{4}}
	_, _, _, _, _ = good, bad, badMap, f, named
}
`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "x_test.go", src, parser.ParseComments|parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	lines := func(ps []token.Pos) string {
		var out []string
		for _, p := range ps {
			out = append(out, fmt.Sprint(fset.Position(p).Line))
		}
		return strings.Join(out, ",")
	}
	if got, want := lines(positionalRows(f)), "11,13"; got != want {
		t.Errorf("positional rows reported at lines %s, want %s", got, want)
	}
	if got, want := lines(unjustifiedSleeps(fset, f)), "17,19"; got != want {
		t.Errorf("unjustified sleeps reported at lines %s, want %s", got, want)
	}
}
