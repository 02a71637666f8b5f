package schema

import (
	"slices"
	"testing"
)

// The drops pg_restore --clean writes come apart at the semicolons outside quotes;
// comment lines and psql's meta-commands are left out.
func TestSplitStatements(t *testing.T) {
	script := "--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\n\nSET statement_timeout = 0;\n" +
		"SELECT pg_catalog.set_config('search_path', '', false);\n" +
		"-- *not* dropping schema, since initdb creates it\n" +
		"DROP TABLE IF EXISTS public.\"semi;colon\";\nDROP TABLE IF EXISTS public.\"two\nlines\";\n" +
		"DROP FUNCTION IF EXISTS public.f(text);\n"
	want := []string{"SET statement_timeout = 0;", "SELECT pg_catalog.set_config('search_path', '', false);",
		"DROP TABLE IF EXISTS public.\"semi;colon\";", "DROP TABLE IF EXISTS public.\"two\nlines\";", "DROP FUNCTION IF EXISTS public.f(text);"}
	if got := splitStatements(script); !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}
